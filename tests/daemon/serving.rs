//! A serving daemon: its two log formats, the `healthcheck` subcommand
//! against it, extra labels from the config on every client series.

use std::fs;

use crate::support::daemon::{Daemon, Listen, assert_fails_with_one_line, run};
use crate::support::http::{basic, fetch, ready, request, send};
use crate::support::metrics::Metrics;
use crate::support::{Broker, TempDir, free_port, text, wait_until};
use crate::{DEADLINE, SHUTDOWN_DEADLINE, target, write_config};

/// Runs a daemon with one target until it is up, stops it, returns its logs.
fn logs_of_one_connection(format: &str, broker: &Broker) -> String {
    let dir = TempDir::new(&format!("daemon-logs-{format}"));
    let config = dir.join("mqtt-pulse.toml");
    write_config(&config, &[target("x", broker, "")]);
    let mut daemon = Daemon::start(
        &dir,
        &[
            "--config.file",
            config.to_str().unwrap(),
            "--log.format",
            format,
        ],
        ready,
    );
    daemon.wait_for_metrics("x up", |m| m.up("mqtt-pulse-x") == Some(1.0));
    assert_eq!(daemon.terminate(SHUTDOWN_DEADLINE).code(), Some(0));
    daemon.stderr()
}

#[test]
fn json_logs_are_one_object_per_line_with_the_transition_fields() {
    let broker = Broker::start();
    let logs = logs_of_one_connection("json", &broker);
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{logs}"))
        })
        .collect();
    assert!(!lines.is_empty());
    let field = |line: &serde_json::Value, name: &str| -> Option<String> {
        let value = line
            .get("fields")
            .and_then(|f| f.get(name))
            .or_else(|| line.get(name))?;
        value.as_str().map(str::to_owned)
    };
    let transition = lines
        .iter()
        .find(|line| field(line, "status").as_deref() == Some("up"))
        .unwrap_or_else(|| panic!("no status=up line:\n{logs}"));
    assert_eq!(
        field(transition, "client_id").as_deref(),
        Some("mqtt-pulse-x")
    );
    assert_eq!(field(transition, "broker"), Some(broker.addr()));
    // The keys and level names Prometheus components write.
    assert_eq!(
        transition.get("level").and_then(|l| l.as_str()),
        Some("info"),
        "{transition}"
    );
    assert_eq!(
        transition.get("msg").and_then(|m| m.as_str()),
        Some("connection status changed"),
        "{transition}"
    );
    assert!(
        transition.get("ts").is_some_and(|ts| ts.is_string()),
        "{transition}"
    );
    assert!(
        lines
            .iter()
            .any(|line| field(line, "status").as_deref() == Some("terminated")),
        "no status=terminated line on shutdown:\n{logs}"
    );
}

#[test]
fn logfmt_logs_carry_level_and_status() {
    let broker = Broker::start();
    let logs = logs_of_one_connection("logfmt", &broker);
    for line in logs.lines() {
        assert!(line.starts_with("ts="), "not logfmt: {line}");
        assert!(line.contains(" level="), "no level: {line}");
    }
    let transition = logs
        .lines()
        .find(|line| line.contains(" status=up"))
        .unwrap_or_else(|| panic!("no status=up line:\n{logs}"));
    assert!(transition.contains(" level=info"), "{transition}");
    assert!(
        transition.contains(" msg=\"connection status changed\""),
        "{transition}"
    );
    assert!(!logs.contains(" message="), "msg=, not message=:\n{logs}");
    assert!(
        transition.contains(" client_id=mqtt-pulse-x"),
        "{transition}"
    );
    assert!(
        transition.contains(&format!(" broker={}", broker.addr())),
        "{transition}"
    );
}

#[test]
fn healthcheck_exits_zero_for_a_running_daemon_and_one_line_otherwise() {
    // Its own broker: without a config the daemon would connect to the
    // machine's shared one as `mqtt-pulse-local`, taking the session of anyone
    // running it there.
    let broker = Broker::start();
    let dir = TempDir::new("daemon-healthcheck");
    let config = dir.join("mqtt-pulse.toml");
    write_config(&config, &[target("health", &broker, "")]);
    let daemon = Daemon::start(&dir, &["--config.file", config.to_str().unwrap()], ready);
    let address = format!("127.0.0.1:{}", daemon.port());
    let healthy = run(&["healthcheck", "--web.listen-address", &address]);
    assert!(healthy.status.success(), "{}", text(&healthy.stderr));
    // The `:port` form of the daemon's own flag means this machine.
    let port_only = format!(":{}", daemon.port());
    let healthy = run(&["--web.listen-address", &port_only, "healthcheck"]);
    assert!(healthy.status.success(), "{}", text(&healthy.stderr));

    let nobody = format!("127.0.0.1:{}", free_port());
    let down = run(&["healthcheck", "--web.listen-address", &nobody]);
    assert_fails_with_one_line(
        &down,
        &format!("mqtt-pulse: healthcheck of {nobody} failed: Connection refused (os error 111)"),
        "healthcheck with nothing listening",
    );
}

#[test]
fn extra_labels_from_the_config_are_on_every_client_series() {
    let broker = Broker::start();
    let dir = TempDir::new("daemon-labels");
    let config = dir.join("mqtt-pulse.toml");
    fs::write(
        &config,
        format!(
            "[defaults]\nlabels = {{ site = \"north\", area = \"default\" }}\n\n{}",
            target("lab", &broker, "labels = { area = \"b7\" }")
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&dir, &["--config.file", config.to_str().unwrap()], ready);
    let metrics = daemon.wait_for_metrics("the labelled target up", |m| {
        m.value(
            "mqtt_client_up",
            &[
                ("client_id", "mqtt-pulse-lab"),
                ("site", "north"),
                ("area", "b7"),
            ],
        ) == Some(1.0)
    });
    assert_eq!(
        metrics.value(
            "mqtt_client_ping_rtt_seconds_count",
            &[
                ("client_id", "mqtt-pulse-lab"),
                ("site", "north"),
                ("area", "b7")
            ],
        ),
        Some(0.0)
    );
    // The daemon asks for process metrics; the library's default is off.
    #[cfg(all(target_os = "linux", feature = "process-metrics"))]
    assert!(
        metrics.text.contains("\nprocess_resident_memory_bytes "),
        "{}",
        metrics.text
    );
}

/// Guards the `MQTT_PULSE_*` environment variables, each standing in for its
/// flag (no flag is given): `_CONFIG_FILE` (the file's target is monitored),
/// `_WEB_LISTEN_ADDRESS` with two comma-separated addresses (both serve),
/// `_WEB_CONFIG_FILE` (its basic auth is asked for), `_LOG_FORMAT` (every
/// line is JSON) and `_LOG_LEVEL` (debug lines appear; the default is info).
#[test]
fn every_flag_can_come_from_its_mqtt_pulse_environment_variable() {
    let broker = Broker::start();
    let dir = TempDir::new("daemon-env");
    let config = dir.join("mqtt-pulse.toml");
    write_config(&config, &[target("env", &broker, "")]);
    let web = dir.join("web.yml");
    let (user, password) = ("prometheus", "env-password-3b9e");
    fs::write(
        &web,
        format!(
            "basic_auth_users:\n  {user}: {}\n",
            bcrypt::hash(password, 4).unwrap()
        ),
    )
    .unwrap();
    let second = free_port();
    let daemon = Daemon::start_listening(
        &dir,
        &Listen::Env(vec![format!("127.0.0.1:{second}")]),
        &[],
        &[
            ("MQTT_PULSE_CONFIG_FILE", config.to_str().unwrap()),
            ("MQTT_PULSE_WEB_CONFIG_FILE", web.to_str().unwrap()),
            ("MQTT_PULSE_LOG_FORMAT", "json"),
            ("MQTT_PULSE_LOG_LEVEL", "debug"),
        ],
        ready,
    );
    // Checked first: without the file the daemon would monitor its default
    // target, the machine's shared broker, and the test would only see that
    // once its deadline for the file's target ran out.
    let logs = daemon.stderr();
    assert!(
        logs.lines()
            .any(|line| line.contains("mqtt-pulse started")
                && line.contains(config.to_str().unwrap())),
        "the start line does not name the config file:\n{logs}"
    );
    let authorized = request(
        "GET",
        "/metrics",
        &[("Authorization", &basic(user, password))],
    );
    for port in [daemon.port(), second] {
        let anonymous = fetch(port, "GET", "/metrics").unwrap();
        assert_eq!(anonymous.status, 401, "port {port}: {anonymous:?}");
        let up = wait_until(DEADLINE, || {
            let page = send(port, &authorized).unwrap();
            page.status == 200 && Metrics::parse(page.body).up("mqtt-pulse-env") == Some(1.0)
        });
        assert!(
            up,
            "port {port}: the file's target never up:\n{}",
            daemon.stderr()
        );
    }

    let logs = daemon.stderr();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|line| line.get("level").and_then(|l| l.as_str()) == Some("debug")),
        "no debug line:\n{logs}"
    );
}

/// Guards a repeated `--web.listen-address`: the daemon listens on every
/// address given (here three), not only on the first or the last.
#[test]
fn a_repeated_listen_address_flag_listens_on_each_address() {
    let broker = Broker::start();
    let dir = TempDir::new("daemon-listen-twice");
    let config = dir.join("mqtt-pulse.toml");
    write_config(&config, &[target("twice", &broker, "")]);
    let (second, third) = (free_port(), free_port());
    let (second_address, third_address) =
        (format!("127.0.0.1:{second}"), format!("127.0.0.1:{third}"));
    let daemon = Daemon::start(
        &dir,
        &[
            "--config.file",
            config.to_str().unwrap(),
            "--web.listen-address",
            &second_address,
            "--web.listen-address",
            &third_address,
        ],
        ready,
    );
    daemon.wait_for_metrics("the target up", |m| m.up("mqtt-pulse-twice") == Some(1.0));
    for port in [second, third] {
        let page = fetch(port, "GET", "/metrics")
            .unwrap_or_else(|e| panic!("port {port}: {e}\n{}", daemon.stderr()));
        assert_eq!(page.status, 200, "port {port}");
        assert_eq!(
            Metrics::parse(page.body).up("mqtt-pulse-twice"),
            Some(1.0),
            "port {port}"
        );
    }
}
