//! Secrets are kept out of both log formats, the metrics page and every
//! error.

use std::fs;
use std::process::Output;

use mqtt_pulse::config::Config;

use crate::support::daemon::{Daemon, assert_fails_with_one_line, run};
use crate::support::http::ready;
use crate::support::{Broker, TempDir, text};
use crate::{DEFAULTS, SHUTDOWN_DEADLINE, target, write_config};

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
