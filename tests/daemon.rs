//! The `mqtt-pulse` binary as users run it: bad input fails with one line and
//! a status of 1 (checked for every `tests/testdata/bad-*.toml`, through both
//! `--config.check` and the serving path), reload by `POST /-/reload` and SIGHUP
//! against real Mosquitto brokers, clean shutdown on SIGTERM, secrets kept out
//! of every output, and the two log formats.
//!
//! Every daemon runs on a free port with its config in a temp dir, and is
//! killed when its guard drops. Nothing waits a fixed time: each test polls a
//! real condition (a scrape, a broker log line, the process's exit) against a
//! deadline.

mod support;

use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use mqtt_pulse::config::Config;
use mqtt_pulse::daemon::{DaemonError, LONG_VERSION};
use nix::sys::signal::Signal;
use support::daemon::{Daemon, assert_fails_with_one_line, run};
use support::http::ready;
use support::{Broker, TempDir, free_port, text, wait_until};

/// How long a daemon may take to serve, a target to connect, a reload to show.
const DEADLINE: Duration = Duration::from_secs(10);
/// How long SIGTERM may take to end the daemon.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------
// One-shot runs
// ---------------------------------------------------------------------------------

/// `--config.file <file> --web.listen-address 127.0.0.1:<free port>`: the
/// serving path, which must fail before it serves.
fn serve_args(config: &str, port: u16) -> Vec<String> {
    vec![
        "--config.file".into(),
        config.into(),
        "--web.listen-address".into(),
        format!("127.0.0.1:{port}"),
    ]
}

#[test]
fn every_bad_config_fails_with_the_librarys_one_line_through_check_and_serve() {
    let mut bad_files: Vec<PathBuf> = fs::read_dir("tests/testdata")
        .expect("read tests/testdata")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("bad-") && name.ends_with(".toml")
        })
        .collect();
    bad_files.sort();
    assert!(
        bad_files.len() >= 40,
        "expected the bad-*.toml table of tests/config.rs, found {bad_files:?}"
    );

    for path in &bad_files {
        let error = Config::load(path)
            .err()
            .unwrap_or_else(|| panic!("{} loads, but it is a bad-* file", path.display()));
        let expected = format!("mqtt-pulse: {error}");
        let file = path.to_str().expect("a UTF-8 path");

        let check = run(&["--config.file", file, "--config.check"]);
        assert_fails_with_one_line(&check, &expected, &format!("--config.check {file}"));

        let serve = run(&serve_args(file, free_port()));
        assert_fails_with_one_line(&serve, &expected, &format!("serving {file}"));
    }
}

#[test]
fn a_missing_or_unreadable_config_file_fails_with_one_line() {
    let dir = TempDir::new("daemon-unreadable");
    let missing = dir.join("missing.toml");
    // A directory: unreadable as a file even for root, unlike a chmod 000 file.
    let directory = dir.join("config.toml");
    fs::create_dir(&directory).unwrap();

    for path in [&missing, &directory] {
        let error = Config::load(path).expect_err("an unreadable file");
        let expected = format!("mqtt-pulse: {error}");
        assert!(
            expected.contains("cannot read the config file"),
            "{expected}"
        );
        let file = path.to_str().unwrap();

        let check = run(&["--config.file", file, "--config.check"]);
        assert_fails_with_one_line(&check, &expected, &format!("--config.check {file}"));
        let serve = run(&serve_args(file, free_port()));
        assert_fails_with_one_line(&serve, &expected, &format!("serving {file}"));
    }
}

#[test]
fn a_listen_address_in_use_fails_with_one_line() {
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = run(&[
        "--config.file",
        "tests/testdata/good-minimal.toml",
        "--web.listen-address",
        &address,
    ]);
    let in_use = io::Error::from_raw_os_error(nix::errno::Errno::EADDRINUSE as i32);
    assert_fails_with_one_line(
        &output,
        &format!("mqtt-pulse: cannot listen on {address}: {in_use}"),
        "listen address in use",
    );
    drop(taken);
}

#[test]
fn malformed_listen_addresses_fail_with_one_line() {
    let cases = [
        (
            "nonsense",
            "mqtt-pulse: invalid --web.listen-address \"nonsense\": expected host:port or :port",
        ),
        (
            ":99999",
            "mqtt-pulse: invalid --web.listen-address \":99999\": \"99999\" is not a port number",
        ),
        (
            "host:",
            "mqtt-pulse: invalid --web.listen-address \"host:\": expected host:port or :port",
        ),
    ];
    for (address, expected) in cases {
        let output = run(&[
            "--config.file",
            "tests/testdata/good-minimal.toml",
            "--web.listen-address",
            address,
        ]);
        assert_fails_with_one_line(
            &output,
            expected,
            &format!("--web.listen-address {address}"),
        );
    }
}

#[test]
fn a_missing_web_config_file_fails_with_one_clear_line() {
    // Every other bad web config is in tests/web_config.rs.
    let listen = format!("127.0.0.1:{}", free_port());
    let missing = "tests/testdata/web/no-such-web-config.yml";
    let output = run(&[
        "--config.file",
        "tests/testdata/good-minimal.toml",
        "--web.listen-address",
        &listen,
        "--web.config.file",
        missing,
    ]);
    let error = mqtt_pulse::http::WebConfig::load(missing).expect_err("a missing file");
    let expected = format!("mqtt-pulse: {}", DaemonError::from(error));
    assert!(
        expected.contains("cannot read the web config file") && expected.contains(missing),
        "{expected}"
    );
    assert_fails_with_one_line(&output, &expected, "--web.config.file missing");
}

#[test]
fn an_unknown_flag_is_clap_usage_error_status_2() {
    let output = run(&["--no-such-flag"]);
    let stderr = text(&output.stderr);
    // clap's convention for usage errors; anything non-zero would do for a
    // shell, but 2 is what it documents and what scripts can tell apart from 1.
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unexpected argument '--no-such-flag'"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn config_check_on_a_good_file_prints_a_one_line_summary() {
    let output = run(&[
        "--config.file",
        "tests/testdata/good-full.toml",
        "--config.check",
    ]);
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "tests/testdata/good-full.toml: OK, 3 targets (plain, tls-own, websocket)\n"
    );
    // The file turns TLS verification off for one target: warned, one line.
    let config = Config::load(Path::new("tests/testdata/good-full.toml")).unwrap();
    let expected: String = config
        .warnings()
        .iter()
        .map(|warning| format!("{warning}\n"))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(stderr, expected);
}

#[test]
fn version_names_the_version_revision_and_compiler() {
    let output = run(&["--version"]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = text(&output.stdout);
    assert_eq!(stdout, format!("mqtt-pulse {LONG_VERSION}\n"));
    let rest = LONG_VERSION
        .strip_prefix(concat!(env!("CARGO_PKG_VERSION"), " (revision "))
        .unwrap_or_else(|| panic!("{LONG_VERSION}"));
    let (revision, rustc) = rest
        .strip_suffix(')')
        .and_then(|rest| rest.split_once(", rustc "))
        .unwrap_or_else(|| panic!("{LONG_VERSION}"));
    assert!(!revision.is_empty() && !revision.contains(' '), "{stdout}");
    // The compiler is always known: build.rs runs it.
    assert!(
        rustc.split('.').count() >= 3 && rustc.split('.').all(|p| !p.is_empty()),
        "{stdout}"
    );
    assert!(output.stderr.is_empty());
}

// ---------------------------------------------------------------------------------
// HTTP, metrics, broker logs
// ---------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------

/// A `[[target]]` table.
fn target(name: &str, broker: &Broker, extra: &str) -> String {
    format!(
        "[[target]]\nname = \"{name}\"\nurl = \"{}\"\n{extra}\n",
        broker.url()
    )
}

/// Short reconnect delays, so a refused connect is retried within the test.
const DEFAULTS: &str =
    "[defaults]\nkeep_alive = \"5s\"\nbackoff = { initial = \"50ms\", max = \"500ms\" }\n\n";

fn write_config(path: &Path, targets: &[String]) {
    fs::write(path, format!("{DEFAULTS}{}", targets.concat())).unwrap();
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

// ---------------------------------------------------------------------------------
// Reload and shutdown
// ---------------------------------------------------------------------------------

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

    let mut daemon = Daemon::start(&dir, &["--config.file", config.to_str().unwrap()], ready);
    let metrics = daemon.wait_for_metrics("a, b and d up", |m| {
        ["mqtt-pulse-a", "mqtt-pulse-b", "mqtt-pulse-d"]
            .iter()
            .all(|id| m.up(id) == Some(1.0))
    });
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
    let response = daemon.request("POST", "/-/reload");
    assert_eq!(response.status, 200, "{}", response.body);
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
    daemon.signal(Signal::SIGHUP);
    let metrics = daemon.wait_for_metrics("e up and the last reload successful", |m| {
        m.up("mqtt-pulse-e") == Some(1.0) && m.reload_successful() == Some(1.0)
    });
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

// ---------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------

/// The right password; "plugh" appears nowhere else.
const SECRET: &str = "s3cr3t-plugh-7781";
const SECRET_PART: &str = "plugh";
/// The wrong password of the `wrong` target: a secret just the same.
const WRONG: &str = "wr0ng-frotz-2203";
const WRONG_PART: &str = "frotz";

fn assert_no_secret(what: &str, text: &str) {
    for secret in [SECRET, SECRET_PART, WRONG, WRONG_PART] {
        assert!(
            !text.contains(secret),
            "{what} shows a password ({secret:?}):\n{text}"
        );
    }
}

fn secrets_are_kept_out_of_everything(format: &str) {
    let broker = Broker::builder().password("probe", SECRET).start();
    let dir = TempDir::new(&format!("daemon-secrets-{format}"));
    fs::write(dir.join("password"), format!("{SECRET}\n")).unwrap();
    fs::write(dir.join("wrong-password"), format!("{WRONG}\n")).unwrap();
    let config = dir.join("mqtt-pulse.toml");
    let inline = target(
        "inline",
        &broker,
        &format!("username = \"probe\"\npassword = \"{SECRET}\""),
    );
    let file = target(
        "file",
        &broker,
        "username = \"probe\"\npassword_file = \"password\"",
    );
    let wrong = target(
        "wrong",
        &broker,
        "username = \"probe\"\npassword_file = \"wrong-password\"",
    );
    write_config(&config, &[inline.clone(), file.clone(), wrong.clone()]);
    let config_arg = config.to_str().unwrap();

    // --config.check: the summary and the inline-password warning, no secret.
    let check = run(&["--config.file", config_arg, "--config.check"]);
    let (stdout, stderr) = (text(&check.stdout), text(&check.stderr));
    assert_eq!(check.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        format!("{config_arg}: OK, 3 targets (inline, file, wrong)\n")
    );
    assert!(
        stderr.contains("warning: inline `password` in [[target]] \"inline\""),
        "{stderr}"
    );
    assert_no_secret("--config.check", &format!("{stdout}{stderr}"));

    let mut daemon = Daemon::start(
        &dir,
        &[
            "--config.file",
            config_arg,
            "--log.level",
            "debug",
            "--log.format",
            format,
        ],
        ready,
    );
    let metrics = daemon.wait_for_metrics("inline and file up, wrong refused", |m| {
        m.up("mqtt-pulse-inline") == Some(1.0)
            && m.up("mqtt-pulse-file") == Some(1.0)
            && m.value(
                "mqtt_client_connect_failures_total",
                &[
                    ("client_id", "mqtt-pulse-wrong"),
                    ("reason", "not_authorized"),
                ],
            )
            .is_some_and(|failures| failures >= 1.0)
    });
    assert_eq!(metrics.up("mqtt-pulse-wrong"), Some(0.0));
    assert_no_secret("/metrics", &metrics.text);
    let page = daemon.request("GET", "/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("mqtt-pulse-inline"), "{}", page.body);
    assert_no_secret("the landing page", &page.body);

    // Broken files with the password right next to the fault.
    let broken = [
        // An unknown key one line below the password.
        format!("{DEFAULTS}{inline}pasword = \"{SECRET}\"\n"),
        // A syntax error on the password's own line.
        format!(
            "{DEFAULTS}{}password = \"{SECRET}\" trailing\n",
            target("x", &broker, "username = \"probe\"")
        ),
        // A bad value on the line after the password.
        format!("{DEFAULTS}{inline}keep_alive = \"forever\"\n"),
        // The password written twice.
        format!("{DEFAULTS}{inline}password = \"{SECRET}\"\n"),
    ];
    for text in &broken {
        fs::write(&config, text).unwrap();
        let error = Config::load(&config).expect_err("a broken file");
        let response = daemon.request("POST", "/-/reload");
        assert_eq!(response.status, 500, "{}", response.body);
        assert_eq!(response.body, format!("config reload failed: {error}\n"));
        assert_no_secret("the reload error", &response.body);

        let check = run(&["--config.file", config_arg, "--config.check"]);
        assert_fails_with_one_line(&check, &format!("mqtt-pulse: {error}"), "--config.check");
        assert_no_secret("--config.check", &text_of(&check));
    }
    // ... while every target keeps running.
    let metrics = daemon.metrics();
    assert_eq!(metrics.reload_successful(), Some(0.0));
    assert_eq!(metrics.up("mqtt-pulse-inline"), Some(1.0));

    let status = daemon.terminate(SHUTDOWN_DEADLINE);
    assert_eq!(status.code(), Some(0));
    let logs = daemon.stderr();
    assert_no_secret("the logs", &logs);
    assert!(
        logs.contains("warning: inline `password` in [[target]]"),
        "no inline-password warning in the logs:\n{logs}"
    );
    assert!(logs.contains("config reload failed"), "{logs}");
    assert!(logs.contains("not_authorized"), "{logs}");
    if format == "json" {
        for line in logs.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        }
    }
}

fn text_of(output: &Output) -> String {
    format!("{}{}", text(&output.stdout), text(&output.stderr))
}

#[test]
fn secrets_are_kept_out_of_logfmt_logs_metrics_pages_and_errors() {
    secrets_are_kept_out_of_everything("logfmt");
}

#[test]
fn secrets_are_kept_out_of_json_logs_metrics_pages_and_errors() {
    secrets_are_kept_out_of_everything("json");
}

// ---------------------------------------------------------------------------------
// Log formats
// ---------------------------------------------------------------------------------

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
    assert_eq!(
        transition.get("level").and_then(|l| l.as_str()),
        Some("INFO"),
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
    let dir = TempDir::new("daemon-healthcheck");
    let daemon = Daemon::start(&dir, &[], ready);
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
}

#[test]
fn config_check_also_checks_the_web_config_and_certificate_contents() {
    let web = "tests/testdata/web/bad-bcrypt-hash.yml";
    let expected = format!(
        "mqtt-pulse: {}",
        mqtt_pulse::http::WebConfig::load(Path::new(web)).unwrap_err()
    );
    let output = run(&["--config.check", "--web.config.file", web]);
    assert_fails_with_one_line(&output, &expected, "--config.check with a bad web config");

    // The config loader checks that files exist; starting also reads them.
    let dir = TempDir::new("daemon-check-pem");
    let config = dir.join("mqtt-pulse.toml");
    fs::write(
        &config,
        format!(
            "[[target]]\nname = \"t\"\nurl = \"mqtts://127.0.0.1:8883\"\n[target.tls]\nca_file = \"{}\"\n",
            fs::canonicalize("tests/testdata/web/not-a-certificate.pem")
                .unwrap()
                .display()
        ),
    )
    .unwrap();
    let output = run(&["--config.check", "--config.file", config.to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("mqtt-pulse: target \"t\": cannot use the certificate file")
            && stderr.lines().count() == 1,
        "{stderr}"
    );
}
