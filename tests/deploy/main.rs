//! The deployment files (Dockerfile, docker-compose.yml, deploy/, dashboards/,
//! docs/runbook.md, scripts/demo) against real tools: `promtool` checks and
//! unit-tests the alert rules; a real Prometheus, loaded with the deploy config
//! and rules, scrapes the real `mqtt-pulse` binary watching real Mosquitto
//! brokers, and runs every query of every dashboard and rule; `docker-compose`
//! validates the compose file; `scripts/demo` runs and stops its stack;
//! `kubectl kustomize` renders the Kubernetes base and `kubernetes-validate`
//! checks it; Podman builds the image and runs it as the manifests and the
//! compose file do.
//!
//! YAML is read through Debian's `/usr/bin/python3` and its `yaml` module
//! (package python3-yaml, which scripts/test installs): named by path, so a
//! python3 earlier on PATH (a virtualenv, pyenv) without PyYAML is not used.
// The real binary and the daemon's config files: skipped without the feature.
#![cfg(feature = "daemon")]

#[path = "../support/mod.rs"]
mod support;

mod alerts;
mod compose;
mod dashboards;
mod demo;
mod dockerfile;
mod image;
mod kubernetes;
mod promql;
mod queries;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::daemon::Daemon;
use support::http::ready;
use support::process::output_with_input;
use support::text;

/// The release build. The Dockerfile's build stage and scripts/demo run exactly
/// this command; the tests below check that they still do.
const RELEASE_BUILD: &str = "cargo build --release --locked";
/// How long to wait for a process to get ready or for Prometheus to have data.
const DEADLINE: Duration = Duration::from_secs(40);
/// The scrape job of deploy/prometheus/prometheus.yml, used by rules and dashboards.
const JOB: &str = "mqtt-pulse";
/// Series Prometheus makes up itself rather than scraping.
const SYNTHETIC_METRICS: &[&str] = &[
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
    "ALERTS",
    "ALERTS_FOR_STATE",
];
/// What Grafana's built-in variables become in the queries run here: windows
/// short enough for a Prometheus that has scraped every second for a few seconds.
const BUILTIN_VARIABLES: &[(&str, &str)] = &[
    ("__rate_interval", "5s"),
    ("__interval", "1s"),
    ("__range", "1m"),
];

// ---------------------------------------------------------------------------------
// Files and tools
// ---------------------------------------------------------------------------------

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Runs `command` to completion; panics if it cannot start (naming `package`,
/// the Debian package that provides it).
fn output(command: &mut Command, package: &str) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?} ({e}); install the {package} package"))
}

/// Runs `command` and panics with its output unless it succeeds; returns stdout.
fn succeed(command: &mut Command, package: &str) -> String {
    let out = output(command, package);
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Debian's python3, whose `yaml` module scripts/test installs (python3-yaml).
const PYTHON3: &str = "/usr/bin/python3";

/// YAML as JSON, through python3-yaml.
fn yaml(source: &str, what: &str) -> Value {
    let out = output_with_input(
        Command::new(PYTHON3).args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ]),
        source.as_bytes(),
        "python3-yaml",
    );
    assert!(
        out.status.success(),
        "{what} is not valid YAML:\n{}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every document of a multi-document YAML stream, as JSON.
fn yaml_documents(source: &str, what: &str) -> Vec<Value> {
    let out = output_with_input(
        Command::new(PYTHON3).args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)",
        ]),
        source.as_bytes(),
        "python3-yaml",
    );
    assert!(
        out.status.success(),
        "{what} is not valid YAML:\n{}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn yaml_file(path: &Path) -> Value {
    yaml(&read(path), &path.display().to_string())
}

/// Calls `attempt` every 100 ms until it returns `Some` or `timeout` passes.
fn poll<T>(timeout: Duration, attempt: impl FnMut() -> Option<T>) -> Option<T> {
    support::poll(timeout, Duration::from_millis(100), attempt)
}

// ---------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------

/// The real `mqtt-pulse` binary serving `config` on a free port.
fn exporter(dir: &Path, config: &Path) -> Daemon {
    Daemon::start(dir, &["--config.file", config.to_str().unwrap()], ready)
}

/// Scrapes `exporter` until its page has a line `series value`.
fn await_sample(exporter: &Daemon, series: &str, value: &str) {
    let line = format!("{series} {value}");
    let found = poll(DEADLINE, || {
        exporter
            .metrics()
            .text
            .lines()
            .any(|l| l == line)
            .then_some(())
    });
    assert!(
        found.is_some(),
        "no {line:?} within {DEADLINE:?}:\n{}\n--- log ---\n{}",
        exporter.metrics().text,
        exporter.stderr()
    );
}
