//! Rotated secrets and certificates take effect without a restart (issue 14,
//! item 2): the password, CA, certificate and key files are read again at
//! every connect attempt. Real Mosquitto: the secret is changed on both sides,
//! the broker restarted, and the target comes back up without the TOML being
//! touched or the daemon reloaded.

use std::fs;
use std::process::{Command, Stdio};

use crate::support::broker::MOSQUITTO_PASSWD;
use crate::support::daemon::Daemon;
use crate::support::http::ready;
use crate::support::{Broker, TempDir, TestPki};
use crate::{SHUTDOWN_DEADLINE, target, write_config};

/// Up once, then down, then up again: the connection after the rotation.
fn back_up(m: &crate::support::metrics::Metrics, id: &str) -> bool {
    m.up(id) == Some(1.0) && m.status_changes(id, "up") == Some(2.0)
}

#[test]
fn a_rotated_password_is_used_at_the_next_connect_attempt() {
    let broker = Broker::builder().password("probe", "old-secret-1").start();
    let dir = TempDir::new("daemon-rotate-password");
    let password = dir.join("password");
    fs::write(&password, "old-secret-1\n").unwrap();
    let config = dir.join("mqtt-pulse.toml");
    let extra = "username = \"probe\"\npassword_file = \"password\"";
    write_config(&config, &[target("t", &broker, extra)]);
    let config_text = fs::read_to_string(&config).unwrap();
    let mut daemon = Daemon::start(&dir, &["--config.file", config.to_str().unwrap()], ready);
    daemon.wait_for_metrics("t up", |m| m.up("mqtt-pulse-t") == Some(1.0));

    // Both sides rotate: the broker's password file, then ours, then the
    // broker restarts (dropping the connection) with the new one.
    let out = Command::new(MOSQUITTO_PASSWD)
        .arg("-b")
        .arg(broker.dir().join("passwd"))
        .args(["probe", "new-secret-2"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    fs::write(&password, "new-secret-2\n").unwrap();
    broker.restart();
    let metrics = daemon.wait_for_metrics("t up again with the new password", |m| {
        back_up(m, "mqtt-pulse-t")
    });
    // No refusal on the way: the first attempt after the restart used the new password.
    let refused = metrics.value(
        "mqtt_client_connect_failures_total",
        &[("client_id", "mqtt-pulse-t"), ("reason", "not_authorized")],
    );
    assert!(refused.unwrap_or(0.0) == 0.0, "{}", metrics.text);
    assert_eq!(fs::read_to_string(&config).unwrap(), config_text);
    assert_eq!(metrics.reload_successful(), Some(1.0));
    assert!(!daemon.stderr().contains("config reloaded"));
    assert_eq!(daemon.terminate(SHUTDOWN_DEADLINE).code(), Some(0));
}

#[test]
fn a_rotated_ca_is_used_at_the_next_connect_attempt() {
    let dir = TempDir::new("daemon-rotate-ca");
    let old = TestPki::generate_named(dir.join("pki"), "old");
    let broker = Broker::builder().tls(old.server_files()).start();
    let ca = dir.join("ca.pem");
    fs::copy(&old.ca_pem_path, &ca).unwrap();
    let config = dir.join("mqtt-pulse.toml");
    let extra = "[target.tls]\nca_file = \"ca.pem\"";
    write_config(&config, &[target("t", &broker, extra)]);
    let config_text = fs::read_to_string(&config).unwrap();
    let mut daemon = Daemon::start(&dir, &["--config.file", config.to_str().unwrap()], ready);
    daemon.wait_for_metrics("t up over TLS", |m| m.up("mqtt-pulse-t") == Some(1.0));

    // A new CA and a server certificate from it, on both sides.
    let new = TestPki::generate_named(dir.join("pki"), "new");
    for (from, to) in [
        (&new.server_cert_path, &old.server_cert_path),
        (&new.server_key_path, &old.server_key_path),
        (&new.ca_pem_path, &old.ca_pem_path),
    ] {
        fs::copy(from, to).unwrap();
    }
    fs::copy(&new.ca_pem_path, &ca).unwrap();
    broker.restart();
    let metrics = daemon.wait_for_metrics("t up again, trusting the new CA", |m| {
        back_up(m, "mqtt-pulse-t")
    });
    let tls_failures = metrics.value(
        "mqtt_client_connect_failures_total",
        &[("client_id", "mqtt-pulse-t"), ("reason", "tls")],
    );
    assert!(tls_failures.unwrap_or(0.0) == 0.0, "{}", metrics.text);
    assert_eq!(fs::read_to_string(&config).unwrap(), config_text);
    assert_eq!(daemon.terminate(SHUTDOWN_DEADLINE).code(), Some(0));
}
