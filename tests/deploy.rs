//! The deployment files (Dockerfile, docker-compose.yml, deploy/, dashboards/,
//! docs/runbook.md, scripts/demo) against real tools: `promtool` checks and
//! unit-tests the alert rules; a real Prometheus, loaded with the deploy config
//! and rules, scrapes the real `mqtt-pulse` binary watching real Mosquitto
//! brokers, and runs every query of every dashboard and rule; `docker-compose`
//! validates the compose file; `scripts/demo` runs and stops its stack.
//!
//! YAML is read through `python3 -c 'import yaml'`: python3-yaml is a dependency
//! of the Debian `docker-compose` package these tests need anyway.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Broker, TempDir, free_port};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use serde_json::{Value, json};

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

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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

/// YAML as JSON, through python3-yaml.
fn yaml(source: &str, what: &str) -> Value {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); install python3-yaml"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(source.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
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

fn binary() -> PathBuf {
    assert_cmd::cargo::cargo_bin("mqtt-pulse")
}

/// `mqtt-pulse` with none of the caller's MQTT_PULSE_* / OTEL_* variables.
fn mqtt_pulse() -> Command {
    let mut command = Command::new(binary());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("MQTT_PULSE_") || name.starts_with("OTEL_") {
            command.env_remove(&*name);
        }
    }
    command
}

// ---------------------------------------------------------------------------------
// HTTP (HTTP/1.0: every response is read to the end of the connection)
// ---------------------------------------------------------------------------------

fn http_get(port: u16, path: &str) -> io::Result<(u16, String)> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let raw = text(&raw);
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, format!("not HTTP: {raw:?}"));
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(invalid)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(invalid)?;
    Ok((status, body.to_owned()))
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Calls `attempt` every 100 ms until it returns `Some` or `timeout` passes.
fn poll<T>(timeout: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = attempt() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------

/// A child process killed (SIGKILL, by its pid) and reaped on drop; its output
/// goes to `log`.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(command: &mut Command, log: PathBuf) -> Process {
        let file = fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        Process { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Polls `GET /-/ready` on `port`; panics with the log if the process
    /// exits or does not answer 200 in time.
    fn await_ready(&mut self, name: &str, port: u16) {
        let deadline = Instant::now() + DEADLINE;
        while !http_get(port, "/-/ready").is_ok_and(|(status, _)| status == 200) {
            assert!(!self.exited(), "{name} exited:\n{}", self.log());
            assert!(
                Instant::now() < deadline,
                "{name} not ready on port {port} within {DEADLINE:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The real `mqtt-pulse` binary serving on a free port.
struct Exporter {
    process: Process,
    port: u16,
}

impl Exporter {
    fn start(dir: &Path, config: &Path) -> Exporter {
        let port = free_port();
        let mut process = Process::spawn(
            mqtt_pulse()
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}")),
            dir.join("mqtt-pulse.log"),
        );
        process.await_ready("mqtt-pulse", port);
        Exporter { process, port }
    }

    fn metrics(&self) -> String {
        let (status, body) = http_get(self.port, "/metrics")
            .unwrap_or_else(|e| panic!("GET /metrics: {e}\n{}", self.process.log()));
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Scrapes until the page has a line `series value`.
    fn await_sample(&self, series: &str, value: &str) {
        let line = format!("{series} {value}");
        let found = poll(DEADLINE, || {
            self.metrics().lines().any(|l| l == line).then_some(())
        });
        assert!(
            found.is_some(),
            "no {line:?} within {DEADLINE:?}:\n{}\n--- log ---\n{}",
            self.metrics(),
            self.process.log()
        );
    }
}

/// The real `prometheus` serving on a free port, with `config` (and the files
/// next to it) in `dir`.
struct Prometheus {
    process: Process,
    port: u16,
}

impl Prometheus {
    fn start(dir: &Path, config: &Path) -> Prometheus {
        let port = free_port();
        let mut process = Process::spawn(
            Command::new("/usr/bin/prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("prometheus-data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}")),
            dir.join("prometheus.log"),
        );
        process.await_ready("prometheus", port);
        Prometheus { process, port }
    }

    /// `data` of a successful API answer, or the error Prometheus gave.
    fn api(&self, path: &str) -> Result<Value, String> {
        let (status, body) = http_get(self.port, path).map_err(|e| e.to_string())?;
        let answer: Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body}"))?;
        if answer["status"] == "success" {
            Ok(answer["data"].clone())
        } else {
            Err(format!(
                "HTTP {status}: {} {}",
                answer["errorType"], answer["error"]
            ))
        }
    }

    /// The samples of an instant query (a scalar counts as one sample).
    fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", percent_encode(promql)))?;
        match data["resultType"].as_str() {
            Some("vector" | "matrix") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            _ => Ok(vec![data["result"].clone()]),
        }
    }

    /// The value of `promql`'s first sample, if any.
    fn value(&self, promql: &str) -> Option<f64> {
        let samples = self.query(promql).ok()?;
        samples.first()?["value"][1].as_str()?.parse().ok()
    }

    fn log(&self) -> String {
        self.process.log()
    }
}

// ---------------------------------------------------------------------------------
// PromQL and Grafana
// ---------------------------------------------------------------------------------

/// The metric names a PromQL expression selects: identifiers that are not
/// functions, aggregations, keywords, label names, durations or strings.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "atan2",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_past(&chars, i, '}');
        } else if c == '[' {
            i = skip_past(&chars, i, ']');
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().position(|c| !c.is_whitespace());
            let opens = next.is_some_and(|n| chars[i + n] == '(');
            if opens && LABEL_LISTS.contains(&word.as_str()) {
                i = skip_past(&chars, i + next.unwrap(), ')');
            } else if !opens && !KEYWORDS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The index after the string literal starting at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' && quote != '`' {
            2
        } else {
            1
        };
    }
    i + 1
}

/// The index after the first `close` following `start`, skipping strings.
fn skip_past(chars: &[char], start: usize, close: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() && chars[i] != close {
        i = if matches!(chars[i], '"' | '\'' | '`') {
            skip_string(chars, i)
        } else {
            i + 1
        };
    }
    i + 1
}

/// `expr` with every `$name` / `${name}` replaced from `values`; panics on a
/// variable that is neither a dashboard variable nor a built-in.
fn substitute(expr: &str, values: &BTreeMap<String, String>, what: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .unwrap_or_else(|| panic!("{what}: unclosed ${{"));
            (&braced[..end], end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        let value = values
            .get(name)
            .unwrap_or_else(|| panic!("{what}: unknown variable ${name} in {expr:?}"));
        out.push_str(value);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    out
}

/// A multi-value variable as Grafana puts it into a regex matcher: each value
/// regex-escaped (escapes doubled inside the PromQL string), joined with `|`.
fn regex_alternation(values: &[String]) -> String {
    let escaped: Vec<String> = values
        .iter()
        .map(|v| {
            v.chars()
                .map(|c| {
                    if r"\^$*+?.()|{}[]".contains(c) {
                        format!(r"\\{c}")
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        })
        .collect();
    format!("({})", escaped.join("|"))
}

/// `label_values(selector, label)` split into its two arguments.
fn label_values_query(query: &str) -> Option<(String, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim().to_owned(), label.trim().to_owned()))
}

struct Dashboard {
    file: String,
    json: Value,
}

impl Dashboard {
    fn all() -> Vec<Dashboard> {
        let mut dashboards: Vec<Dashboard> = fs::read_dir(repo("dashboards"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .map(|path| Dashboard {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                json: serde_json::from_str(&read(&path))
                    .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display())),
            })
            .collect();
        dashboards.sort_by(|a, b| a.file.cmp(&b.file));
        assert!(!dashboards.is_empty(), "no dashboards in dashboards/");
        dashboards
    }

    /// Every panel, those inside rows included.
    fn panels(&self) -> Vec<&Value> {
        fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
            for panel in panels.as_array().into_iter().flatten() {
                out.push(panel);
                walk(&panel["panels"], out);
            }
        }
        let mut out = Vec::new();
        walk(&self.json["panels"], &mut out);
        out
    }

    /// (panel title, expr) of every query.
    fn queries(&self) -> Vec<(String, String)> {
        self.panels()
            .into_iter()
            .flat_map(|panel| {
                let title = panel["title"].as_str().unwrap_or("?").to_owned();
                panel["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(move |t| (title.clone(), t["expr"].as_str().unwrap_or("").to_owned()))
            })
            .collect()
    }

    fn variables(&self) -> Vec<&Value> {
        self.json["templating"]["list"]
            .as_array()
            .map(|list| list.iter().collect())
            .unwrap_or_default()
    }

    fn variable(&self, name: &str) -> Option<&Value> {
        self.variables().into_iter().find(|v| v["name"] == name)
    }
}

/// The query of a query variable (object or plain-string form).
fn variable_query(variable: &Value) -> String {
    variable["query"]["query"]
        .as_str()
        .or_else(|| variable["query"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn is_multi(variable: &Value) -> bool {
    variable["multi"] == true || variable["includeAll"] == true
}

// ---------------------------------------------------------------------------------
// Alert rules
// ---------------------------------------------------------------------------------

fn alert_rules() -> Vec<Value> {
    let rules = yaml_file(&repo("deploy/prometheus/alerts.yml"));
    rules["groups"]
        .as_array()
        .expect("alerts.yml has groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// GitHub's anchor for a Markdown heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' => Some(c),
            ' ' => Some('-'),
            _ => None,
        })
        .collect()
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests_cover_every_alert() {
    let rules_file = repo("deploy/prometheus/alerts.yml");
    let tests_file = repo("deploy/prometheus/alerts_test.yml");
    succeed(
        Command::new("/usr/bin/promtool")
            .arg("check")
            .arg("rules")
            .arg(&rules_file),
        "prometheus",
    );
    succeed(
        Command::new("/usr/bin/promtool")
            .arg("test")
            .arg("rules")
            .arg(&tests_file),
        "prometheus",
    );

    let runbook = read(&repo("docs/runbook.md"));
    let sections: BTreeSet<String> = runbook
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .map(slug)
        .collect();
    let rules = alert_rules();
    let mut alerts = BTreeSet::new();
    for rule in &rules {
        let name = rule["alert"]
            .as_str()
            .unwrap_or_else(|| panic!("not an alerting rule: {rule}"));
        assert!(alerts.insert(name.to_owned()), "{name} defined twice");
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("critical" | "warning")
            ),
            "{name}: severity must be critical or warning"
        );
        for key in ["summary", "description"] {
            assert!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{name}: no {key} annotation"
            );
        }
        let url = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
        let anchor = url
            .split_once("docs/runbook.md#")
            .map(|(_, anchor)| anchor)
            .unwrap_or_else(|| panic!("{name}: runbook_url {url:?} is not docs/runbook.md#…"));
        assert_eq!(anchor, name.to_lowercase(), "{name}: runbook anchor");
        assert!(
            sections.contains(anchor),
            "{name}: docs/runbook.md has no section {anchor:?} (sections: {sections:?})"
        );
    }
    assert_eq!(
        sections,
        alerts.iter().map(|a| a.to_lowercase()).collect(),
        "docs/runbook.md has one section per alert, and no others"
    );

    let tests = yaml_file(&tests_file);
    assert_eq!(tests["rule_files"], json!(["alerts.yml"]));
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in tests["tests"].as_array().into_iter().flatten() {
        for check in case["alert_rule_test"].as_array().into_iter().flatten() {
            let name = check["alertname"].as_str().unwrap().to_owned();
            if check["exp_alerts"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                fires.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    assert_eq!(fires, alerts, "alerts with a unit test in which they fire");
    assert_eq!(
        quiet, alerts,
        "alerts with a unit test in which they do not fire"
    );
}

#[test]
fn dashboards_are_current_grafana_json_that_only_use_the_datasource_variable() {
    let expected_datasource = json!({"type": "prometheus", "uid": "${datasource}"});
    let mut uids = BTreeSet::new();
    for dashboard in Dashboard::all() {
        let file = &dashboard.file;
        let json = &dashboard.json;
        assert!(
            json["schemaVersion"].as_u64().is_some_and(|v| v >= 39),
            "{file}: schemaVersion {}",
            json["schemaVersion"]
        );
        let uid = json["uid"].as_str().unwrap_or_default();
        assert!(!uid.is_empty() && uid.len() <= 40, "{file}: uid {uid:?}");
        assert!(uids.insert(uid.to_owned()), "{file}: uid {uid} used twice");
        assert!(json["title"].as_str().is_some_and(|t| !t.is_empty()));

        // Every data source reference anywhere is the variable.
        fn check_datasources(value: &Value, expected: &Value, file: &str) {
            match value {
                Value::Object(map) => {
                    for (key, inner) in map {
                        if key == "datasource" {
                            assert_eq!(
                                inner, expected,
                                "{file}: a datasource that is not the variable"
                            );
                        }
                        check_datasources(inner, expected, file);
                    }
                }
                Value::Array(items) => {
                    items
                        .iter()
                        .for_each(|i| check_datasources(i, expected, file));
                }
                _ => {}
            }
        }
        check_datasources(json, &expected_datasource, file);
        let datasource = dashboard
            .variable("datasource")
            .unwrap_or_else(|| panic!("{file}: no datasource variable"));
        assert_eq!(datasource["type"], "datasource", "{file}");
        assert_eq!(datasource["query"], "prometheus", "{file}");

        // Panels: unique ids, on the 24-column grid, queries with unique refIds.
        let mut ids = BTreeSet::new();
        for panel in dashboard.panels() {
            let title = panel["title"].as_str().unwrap_or("?");
            let id = panel["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{file}: {title}: no id"));
            assert!(ids.insert(id), "{file}: panel id {id} used twice");
            let grid = &panel["gridPos"];
            let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
            assert!(
                x + w <= 24 && grid["h"].as_u64().unwrap() > 0,
                "{file}: {title}: gridPos"
            );
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(panel["datasource"], expected_datasource, "{file}: {title}");
            let targets = panel["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{file}: {title}: no targets"));
            assert!(!targets.is_empty(), "{file}: {title}: no targets");
            let ref_ids: BTreeSet<&str> = targets
                .iter()
                .map(|t| t["refId"].as_str().unwrap())
                .collect();
            assert_eq!(ref_ids.len(), targets.len(), "{file}: {title}: refIds");
            for target in targets {
                assert!(
                    target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    "{file}: {title}: empty expr"
                );
            }
            if panel["type"] == "heatmap" {
                assert!(
                    targets.iter().all(|t| t["format"] == "heatmap"),
                    "{file}: {title}: heatmap format"
                );
            }
        }

        // Variables: label_values queries; multi-value ones only in regex matchers.
        for variable in dashboard.variables() {
            let name = variable["name"].as_str().unwrap();
            if variable["type"] != "query" {
                continue;
            }
            let query = variable_query(variable);
            assert!(
                label_values_query(&query).is_some(),
                "{file}: ${name}: {query:?} is not label_values(…)"
            );
            if is_multi(variable) {
                let mut exprs: Vec<String> =
                    dashboard.queries().into_iter().map(|(_, e)| e).collect();
                exprs.extend(dashboard.variables().iter().map(|v| variable_query(v)));
                for expr in exprs {
                    assert_eq!(
                        expr.matches(&format!("${name}")).count(),
                        expr.matches(&format!("=~\"${name}\"")).count(),
                        "{file}: multi-value ${name} outside a =~ matcher in {expr:?}"
                    );
                }
            }
        }
        let queries_clients = dashboard
            .queries()
            .iter()
            .any(|(_, e)| e.contains("mqtt_client_"));
        if queries_clients {
            for label in ["client_id", "broker"] {
                let variable = dashboard
                    .variable(label)
                    .unwrap_or_else(|| panic!("{file}: no ${label} variable"));
                let (selector, of) = label_values_query(&variable_query(variable)).unwrap();
                assert!(
                    selector.starts_with("mqtt_client_up") && of == label,
                    "{file}: ${label}"
                );
                assert!(
                    is_multi(variable) && variable["includeAll"] == true,
                    "{file}: ${label} is multi with All"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Every query against a real Prometheus scraping the real exporter
// ---------------------------------------------------------------------------------

/// Replaces `from` with `to` in `source`, which must contain it exactly once.
fn replace_once(source: &str, from: &str, to: &str, file: &str) -> String {
    assert_eq!(
        source.matches(from).count(),
        1,
        "{file} must contain {from:?} once"
    );
    source.replacen(from, to, 1)
}

#[test]
fn every_dashboard_and_rule_query_returns_data_from_a_real_exporter() {
    let dir = TempDir::new("deploy-queries");
    // One broker wants a password: "healthy" has it, "wrong-password" not (Mosquitto
    // answers "not authorised"). The other broker is killed once "lost" is up.
    let auth = Broker::builder().password("probe", "probe-secret").start();
    let doomed = Broker::start();
    fs::write(dir.join("good"), "probe-secret\n").unwrap();
    fs::write(dir.join("bad"), "not-the-password\n").unwrap();
    let config = dir.join("mqtt-pulse.toml");
    fs::write(
        &config,
        format!(
            "[defaults]\nkeep_alive = \"1s\"\nconnect_timeout = \"2s\"\n\
             backoff = {{ initial = \"100ms\", max = \"500ms\" }}\n\
             [[target]]\nname = \"healthy\"\nurl = \"{auth}\"\nusername = \"probe\"\npassword_file = \"good\"\n\
             [[target]]\nname = \"wrong-password\"\nurl = \"{auth}\"\nusername = \"probe\"\npassword_file = \"bad\"\n\
             [[target]]\nname = \"lost\"\nurl = \"{doomed}\"\n",
            auth = auth.url(),
            doomed = doomed.url(),
        ),
    )
    .unwrap();
    let exporter = Exporter::start(&dir, &config);
    let lost_up = format!(
        r#"mqtt_client_up{{client_id="mqtt-pulse-lost",broker="{}"}}"#,
        doomed.addr()
    );
    exporter.await_sample(&lost_up, "1");
    doomed.kill();
    exporter.await_sample(&lost_up, "0");

    // The deploy Prometheus config and rules, scraping every second.
    let file = "deploy/prometheus/prometheus.yml";
    let mut prometheus_yml = read(&repo(file));
    for (from, to) in [
        ("scrape_interval: 15s", "scrape_interval: 1s".to_owned()),
        ("scrape_timeout: 10s", "scrape_timeout: 1s".to_owned()),
        (
            "evaluation_interval: 15s",
            "evaluation_interval: 1s".to_owned(),
        ),
        (
            "\"mqtt-pulse:9883\"",
            format!("\"127.0.0.1:{}\"", exporter.port),
        ),
    ] {
        prometheus_yml = replace_once(&prometheus_yml, from, &to, file);
    }
    fs::write(dir.join("prometheus.yml"), prometheus_yml).unwrap();
    fs::copy(repo("deploy/prometheus/alerts.yml"), dir.join("alerts.yml")).unwrap();
    let prometheus = Prometheus::start(&dir, &dir.join("prometheus.yml"));

    // Enough scrapes for 5 s rate windows, pings in them, rules evaluated, and
    // the two down clients pending in MqttClientDown.
    let ready = [
        format!(r#"count_over_time(up{{job="{JOB}"}}[1m]) >= 6"#),
        r#"increase(mqtt_client_ping_rtt_seconds_count{client_id="mqtt-pulse-healthy"}[5s]) > 0"#
            .into(),
        r#"count(ALERTS{alertname="MqttClientDown"}) == 2"#.into(),
        r#"count(ALERTS{alertname="MqttClientAuthFailing"}) == 1"#.into(),
    ];
    let waited = poll(DEADLINE, || {
        ready
            .iter()
            .all(|q| prometheus.value(q).is_some())
            .then_some(())
    });
    assert!(
        waited.is_some(),
        "Prometheus never had {:?}:\n{}\n--- mqtt-pulse ---\n{}",
        ready
            .iter()
            .filter(|q| prometheus.value(q).is_none())
            .collect::<Vec<_>>(),
        prometheus.log(),
        exporter.process.log()
    );

    // The rules loaded and evaluate without error, and exactly the expected
    // alerts are active: both down clients, and the refused credentials.
    let rules = poll(DEADLINE, || {
        let groups = prometheus.api("/api/v1/rules").ok()?["groups"].clone();
        let rules: Vec<Value> = groups
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        rules.iter().all(|r| r["health"] == "ok").then_some(rules)
    })
    .unwrap_or_else(|| panic!("rules unhealthy: {:?}", prometheus.api("/api/v1/rules")));
    assert_eq!(
        rules.len(),
        alert_rules().len(),
        "every rule in alerts.yml is loaded"
    );
    let active: BTreeSet<(String, String, String)> =
        prometheus.api("/api/v1/alerts").unwrap()["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let label = |name: &str| a["labels"][name].as_str().unwrap_or("").to_owned();
                (label("alertname"), label("client_id"), label("reason"))
            })
            .collect();
    let expected_alerts: BTreeSet<(String, String, String)> = [
        ("MqttClientDown", "mqtt-pulse-lost", ""),
        ("MqttClientDown", "mqtt-pulse-wrong-password", ""),
        (
            "MqttClientAuthFailing",
            "mqtt-pulse-wrong-password",
            "not_authorized",
        ),
    ]
    .iter()
    .map(|(a, c, r)| (a.to_string(), c.to_string(), r.to_string()))
    .collect();
    assert_eq!(active, expected_alerts, "active (pending or firing) alerts");

    // Every rule expression: valid, with data exactly where an alert is due.
    let mut used = BTreeMap::<String, String>::new(); // metric -> where
    for rule in &rules {
        let name = rule["name"].as_str().unwrap();
        let expr = rule["query"].as_str().unwrap();
        let samples = prometheus
            .query(expr)
            .unwrap_or_else(|e| panic!("rule {name}: {expr}: {e}"));
        let due = matches!(name, "MqttClientDown" | "MqttClientAuthFailing");
        assert_eq!(
            !samples.is_empty(),
            due,
            "rule {name}: {expr} returned {samples:?}"
        );
        for metric in metric_names(expr) {
            used.entry(metric).or_insert_with(|| format!("rule {name}"));
        }
    }

    // Every dashboard query, with its variables resolved as Grafana would.
    let expected_values: BTreeMap<&str, BTreeSet<String>> = BTreeMap::from([
        ("job", BTreeSet::from([JOB.to_owned()])),
        (
            "instance",
            BTreeSet::from([format!("127.0.0.1:{}", exporter.port)]),
        ),
        ("broker", BTreeSet::from([auth.addr(), doomed.addr()])),
        (
            "client_id",
            [
                "mqtt-pulse-healthy",
                "mqtt-pulse-wrong-password",
                "mqtt-pulse-lost",
            ]
            .map(String::from)
            .into(),
        ),
    ]);
    let mut queries = 0;
    for dashboard in Dashboard::all() {
        let file = &dashboard.file;
        let mut values: BTreeMap<String, String> = BUILTIN_VARIABLES
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for variable in dashboard.variables() {
            let name = variable["name"].as_str().unwrap();
            if variable["type"] != "query" {
                continue;
            }
            let what = format!("{file}: ${name}");
            let query = substitute(&variable_query(variable), &values, &what);
            let (selector, label) = label_values_query(&query).unwrap();
            let found: Vec<String> = serde_json::from_value(
                prometheus
                    .api(&format!(
                        "/api/v1/label/{label}/values?match[]={}",
                        percent_encode(&selector)
                    ))
                    .unwrap_or_else(|e| panic!("{what}: {query}: {e}")),
            )
            .unwrap();
            if let Some(expected) = expected_values.get(name) {
                assert_eq!(
                    &found.iter().cloned().collect::<BTreeSet<_>>(),
                    expected,
                    "{what}: {query}"
                );
            }
            assert!(!found.is_empty(), "{what}: {query} found nothing");
            for metric in metric_names(&selector) {
                used.entry(metric).or_insert_with(|| what.clone());
            }
            let value = if is_multi(variable) {
                regex_alternation(&found)
            } else {
                found[0].clone()
            };
            values.insert(name.to_owned(), value);
        }
        for (title, expr) in dashboard.queries() {
            let what = format!("{file}: panel {title:?}");
            let promql = substitute(&expr, &values, &what);
            let samples = prometheus
                .query(&promql)
                .unwrap_or_else(|e| panic!("{what}: {promql}: {e}"));
            assert!(!samples.is_empty(), "{what}: no data for {promql}");
            for metric in metric_names(&promql) {
                used.entry(metric).or_insert_with(|| what.clone());
            }
            queries += 1;
        }
    }
    assert!(queries >= 20, "only {queries} dashboard queries");

    // Every metric queried is one the exporter serves (or Prometheus makes up).
    let page = exporter.metrics();
    let exported: BTreeSet<&str> = page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for (metric, place) in &used {
        assert!(
            exported.contains(metric.as_str()) || SYNTHETIC_METRICS.contains(&metric.as_str()),
            "{place} queries {metric}, which mqtt-pulse does not export:\n{page}"
        );
    }
    for family in [
        "mqtt_client_up",
        "mqtt_client_ping_rtt_seconds_bucket",
        "mqtt_pulse_build_info",
    ] {
        assert!(used.contains_key(family), "nothing queries {family}");
    }
}

// ---------------------------------------------------------------------------------
// docker-compose.yml
// ---------------------------------------------------------------------------------

/// `docker-compose` in the repository, with none of the caller's variables
/// that the compose file reads.
fn docker_compose(args: &[&str]) -> Command {
    let mut command = Command::new("docker-compose");
    command
        .current_dir(repo(""))
        .args(["-f", "docker-compose.yml"])
        .args(args);
    for name in [
        "MQTT_PORT",
        "MQTT_PULSE_PORT",
        "PROMETHEUS_PORT",
        "GRAFANA_PORT",
        "GRAFANA_ADMIN_PASSWORD",
        "OTLP_GRPC_PORT",
        "MQTT_PULSE_REVISION",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "COMPOSE_PROFILES",
        "COMPOSE_FILE",
    ] {
        command.env_remove(name);
    }
    command
}

/// A service's bind mounts as (host path, container path).
fn binds(service: &Value) -> Vec<(PathBuf, String)> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|volume| {
            let (source, target) = match volume {
                Value::String(spec) => {
                    let mut parts = spec.split(':');
                    (parts.next()?.to_owned(), parts.next()?.to_owned())
                }
                _ => (
                    volume["source"].as_str()?.to_owned(),
                    volume["target"].as_str()?.to_owned(),
                ),
            };
            source
                .starts_with('/')
                .then(|| (PathBuf::from(source), target))
        })
        .collect()
}

/// The host path behind `container_path` in a service, through its bind mounts.
fn host_path(service: &Value, container_path: &str) -> PathBuf {
    binds(service)
        .into_iter()
        .filter_map(|(source, target)| {
            let rest = container_path.strip_prefix(&target)?;
            match rest.strip_prefix('/') {
                _ if rest.is_empty() => Some(source),
                Some(inner) => Some(source.join(inner)),
                None => None,
            }
        })
        .next()
        .unwrap_or_else(|| panic!("{container_path} is not bind-mounted in {service}"))
}

/// The value of `--flag=value` in a service's command.
fn flag(service: &Value, flag: &str) -> String {
    service["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|arg| arg.strip_prefix(&format!("{flag}=")))
        .unwrap_or_else(|| panic!("no {flag}= in {}", service["command"]))
        .to_owned()
}

#[test]
fn compose_file_is_valid_and_every_service_gets_files_that_check() {
    succeed(&mut docker_compose(&["config", "-q"]), "docker-compose");
    succeed(
        &mut docker_compose(&["--profile", "otel", "config", "-q"]),
        "docker-compose",
    );
    let resolved = succeed(
        &mut docker_compose(&["--profile", "otel", "config"]),
        "docker-compose",
    );
    let compose = yaml(&resolved, "docker-compose config");
    let services = &compose["services"];
    let names: BTreeSet<&str> = services
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "grafana",
            "mosquitto",
            "mqtt-pulse",
            "otel-collector",
            "prometheus"
        ])
    );
    for (name, service) in services.as_object().unwrap() {
        let profiles = service["profiles"].as_array().cloned().unwrap_or_default();
        let expected = if name == "otel-collector" {
            vec![json!("otel")]
        } else {
            vec![]
        };
        assert_eq!(profiles, expected, "{name}: profiles");
        for (source, _) in binds(service) {
            assert!(
                source.exists(),
                "{name} mounts {}, which does not exist",
                source.display()
            );
        }
    }

    // mqtt-pulse: built from this Dockerfile; its config passes --config.check and
    // watches the compose broker.
    let pulse = &services["mqtt-pulse"];
    assert_eq!(
        PathBuf::from(pulse["build"]["context"].as_str().unwrap())
            .canonicalize()
            .unwrap(),
        repo("").canonicalize().unwrap()
    );
    let config = host_path(pulse, &flag(pulse, "--config.file"));
    let checked = succeed(
        mqtt_pulse()
            .arg("--config.check")
            .arg(format!("--config.file={}", config.display())),
        "mqtt-pulse",
    );
    assert!(checked.contains("OK"), "{checked}");
    let toml: toml::Value = toml::from_str(&read(&config)).unwrap();
    for target in toml["target"].as_array().unwrap() {
        let url = url::Url::parse(target["url"].as_str().unwrap()).unwrap();
        assert_eq!(
            url.host_str(),
            Some("mosquitto"),
            "{url}: a target outside the stack"
        );
        assert_eq!(url.port(), Some(1883), "{url}");
    }
    let listen = flag(pulse, "--web.listen-address");
    let pulse_port = listen.rsplit(':').next().unwrap().to_owned();

    // mosquitto: the password and ACL files its config names are mounted.
    let mosquitto = &services["mosquitto"];
    let mosquitto_conf = read(&host_path(mosquitto, "/mosquitto/config/mosquitto.conf"));
    for key in ["password_file", "acl_file"] {
        let path = mosquitto_conf
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} ")))
            .unwrap_or_else(|| panic!("mosquitto.conf has no {key}"));
        assert!(host_path(mosquitto, path.trim()).is_file(), "{key} {path}");
    }

    // prometheus: promtool accepts the mounted config (and the rules it names);
    // it scrapes the mqtt-pulse service on the port it listens on.
    let prometheus = &services["prometheus"];
    let prometheus_yml = host_path(prometheus, &flag(prometheus, "--config.file"));
    succeed(
        Command::new("/usr/bin/promtool")
            .arg("check")
            .arg("config")
            .arg(&prometheus_yml),
        "prometheus",
    );
    let scrape = yaml_file(&prometheus_yml);
    let job = scrape["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["job_name"] == JOB)
        .unwrap_or_else(|| panic!("no job {JOB} in {}", prometheus_yml.display()));
    assert_eq!(
        job["static_configs"][0]["targets"],
        json!([format!("mqtt-pulse:{pulse_port}")])
    );

    // grafana: provisioned data source and dashboards, home dashboard present.
    let grafana = &services["grafana"];
    let provisioning = host_path(grafana, "/etc/grafana/provisioning");
    let datasources = yaml_file(&provisioning.join("datasources/prometheus.yml"));
    let datasource = &datasources["datasources"][0];
    assert_eq!(datasource["type"], "prometheus");
    assert_eq!(datasource["url"], "http://prometheus:9090");
    assert_eq!(datasource["isDefault"], true);
    let providers = yaml_file(&provisioning.join("dashboards/mqtt-pulse.yml"));
    let dashboards = host_path(
        grafana,
        providers["providers"][0]["options"]["path"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(
        dashboards.canonicalize().unwrap(),
        repo("dashboards").canonicalize().unwrap()
    );
    let environment = &grafana["environment"];
    assert_eq!(environment["GF_AUTH_ANONYMOUS_ENABLED"], "true");
    assert_eq!(environment["GF_AUTH_ANONYMOUS_ORG_ROLE"], "Viewer");
    let home = environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        .as_str()
        .unwrap();
    assert!(host_path(grafana, home).is_file(), "home dashboard {home}");

    // otel-collector: OTLP gRPC on 4317 into a metrics pipeline that logs.
    let collector = &services["otel-collector"];
    let otel = yaml_file(&host_path(collector, &flag(collector, "--config")));
    assert_eq!(
        otel["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        "0.0.0.0:4317"
    );
    let pipeline = &otel["service"]["pipelines"]["metrics"];
    assert_eq!(pipeline["receivers"], json!(["otlp"]));
    assert_eq!(pipeline["exporters"], json!(["debug"]));
    assert!(
        collector["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["target"] == 4317 || p.as_str().is_some_and(|s| s.ends_with(":4317"))),
        "otel-collector publishes 4317"
    );
}

// ---------------------------------------------------------------------------------
// Dockerfile
// ---------------------------------------------------------------------------------

/// One Dockerfile instruction, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    stage: String,
    keyword: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let source = read(&repo("Dockerfile"));
    let mut instructions = Vec::new();
    let mut stage = String::new();
    let mut current = String::new();
    for line in source.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(start) = trimmed.strip_suffix('\\') {
            current.push_str(start.trim());
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        let keyword = keyword.to_uppercase();
        let args = args.split_whitespace().collect::<Vec<_>>().join(" ");
        if keyword == "FROM" {
            let words: Vec<&str> = args.split(' ').collect();
            stage = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                _ => "final".to_owned(),
            };
        }
        instructions.push(Instruction {
            stage: stage.clone(),
            keyword,
            args,
        });
        current.clear();
    }
    instructions
}

#[test]
fn dockerfile_builds_with_the_tested_command_and_runs_unprivileged_with_a_healthcheck() {
    let instructions = dockerfile();
    let in_stage = |stage: &str, keyword: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|i| i.stage == stage && i.keyword == keyword)
            .map(|i| i.args.as_str())
            .collect()
    };
    let froms: Vec<&str> = instructions
        .iter()
        .filter(|i| i.keyword == "FROM")
        .map(|i| i.args.as_str())
        .collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    assert!(froms[0].starts_with("rust:1.95-bookworm "), "{}", froms[0]);

    // The build stage: every cargo build is the release build, and the last RUN is it.
    let runs = in_stage("build", "RUN");
    assert_eq!(
        runs.last().copied(),
        Some(RELEASE_BUILD),
        "the build stage ends in `RUN {RELEASE_BUILD}`"
    );
    for run in &runs {
        for command in run
            .split("&&")
            .map(str::trim)
            .filter(|c| c.starts_with("cargo"))
        {
            assert_eq!(command, RELEASE_BUILD, "RUN {run}");
        }
    }
    assert!(
        read(&repo("scripts/demo")).contains(RELEASE_BUILD),
        "scripts/demo builds with {RELEASE_BUILD}"
    );
    // --locked: Cargo.lock must already be what Cargo.toml resolves to.
    // Offline, for this machine's platform only: the crates of other
    // platforms (Windows' console crates) are never downloaded here.
    let rustc = succeed(Command::new("rustc").arg("-vV"), "rustc");
    let host = rustc
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc -vV names the host");
    succeed(
        Command::new(env!("CARGO")).current_dir(repo("")).args([
            "metadata",
            "--locked",
            "--offline",
            "--format-version=1",
            "--filter-platform",
            host,
        ]),
        "cargo",
    );

    // The dependency layer stubs every target Cargo.toml names, and copies only
    // files the build context (after .dockerignore) has.
    let manifest: toml::Value = toml::from_str(&read(&repo("Cargo.toml"))).unwrap();
    let stubs = runs.first().copied().unwrap_or_default();
    // Cargo checks that every target the manifest lists has its file.
    let mut paths = vec![manifest["lib"]["path"].as_str().unwrap().to_owned()];
    for (kind, dir) in [
        ("bin", "src/bin"),
        ("bench", "benches"),
        ("test", "tests"),
        ("example", "examples"),
    ] {
        for target in manifest
            .get(kind)
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
        {
            paths.push(match target.get("path").and_then(toml::Value::as_str) {
                Some(path) => path.to_owned(),
                None => format!("{dir}/{}.rs", target["name"].as_str().unwrap()),
            });
        }
    }
    for path in paths {
        assert!(
            stubs.contains(&format!("> {path}")) || stubs.contains(&format!("touch {path}")),
            "no stub for {path}"
        );
    }
    let ignored: Vec<String> = read(&repo(".dockerignore"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').to_owned())
        .collect();
    for required in ["target", ".git"] {
        assert!(
            ignored.iter().any(|i| i == required),
            ".dockerignore leaves out {required}"
        );
    }
    for copy in in_stage("build", "COPY") {
        let words: Vec<&str> = copy.split(' ').collect();
        for source in &words[..words.len() - 1] {
            assert!(repo(source).exists(), "COPY {source}: no such file");
            let top = source.split('/').next().unwrap();
            assert!(
                !ignored.iter().any(|i| i == top),
                "COPY {source}, which .dockerignore leaves out"
            );
        }
    }

    // The runtime stage.
    let workdir = in_stage("build", "WORKDIR");
    let copies = in_stage("final", "COPY");
    let binary_path = "/usr/local/bin/mqtt-pulse";
    assert_eq!(
        copies,
        [format!(
            "--from=build {}/target/release/mqtt-pulse {binary_path}",
            workdir[0]
        )]
    );
    let user = in_stage("final", "USER");
    assert_eq!(user.len(), 1);
    let uid = user[0].split(':').next().unwrap();
    assert!(uid != "root" && uid != "0", "runs as {uid}");
    assert_eq!(in_stage("final", "EXPOSE"), ["9883"]);
    let help = succeed(mqtt_pulse().arg("--help"), "mqtt-pulse");
    assert!(
        help.contains("[default: :9883]"),
        "the exposed port is the default one:\n{help}"
    );
    assert_eq!(
        in_stage("final", "ENTRYPOINT"),
        [format!("[\"{binary_path}\"]")]
    );
    let healthcheck = healthcheck_command();
    assert_eq!(healthcheck[0], binary_path);
    assert_eq!(healthcheck[1], "healthcheck");
    assert!(
        healthcheck.contains(&"--web.listen-address=127.0.0.1:9883".to_owned()),
        "{healthcheck:?}"
    );

    let labels = in_stage("final", "LABEL").join(" ");
    let args = in_stage("final", "ARG");
    assert!(
        args.contains(&format!("VERSION={}", env!("CARGO_PKG_VERSION")).as_str()),
        "ARG VERSION is the crate's: {args:?}"
    );
    for (key, value) in [
        ("title", "\"mqtt-pulse\""),
        ("version", "\"${VERSION}\""),
        ("revision", "\"${REVISION}\""),
        ("licenses", &format!("\"{}\"", env!("CARGO_PKG_LICENSE"))),
    ] {
        let pair = format!("org.opencontainers.image.{key}={value}");
        assert!(labels.contains(&pair), "LABEL {pair} missing in {labels}");
    }
    assert!(labels.contains("org.opencontainers.image.description="));
}

/// The HEALTHCHECK's exec-form command.
fn healthcheck_command() -> Vec<String> {
    let instructions = dockerfile();
    let healthcheck = instructions
        .iter()
        .find(|i| i.stage == "final" && i.keyword == "HEALTHCHECK")
        .expect("a HEALTHCHECK in the runtime stage");
    let command = &healthcheck.args[healthcheck
        .args
        .find("CMD [")
        .expect("HEALTHCHECK CMD [exec form]")
        + 4..];
    serde_json::from_str(command).unwrap_or_else(|e| panic!("HEALTHCHECK CMD {command}: {e}"))
}

#[test]
fn the_dockerfile_healthcheck_passes_against_a_serving_exporter_and_fails_without_one() {
    let dir = TempDir::new("deploy-healthcheck");
    let config = dir.join("mqtt-pulse.toml");
    let nowhere = free_port();
    fs::write(
        &config,
        format!("[[target]]\nname = \"x\"\nurl = \"mqtt://127.0.0.1:{nowhere}\"\n"),
    )
    .unwrap();
    let exporter = Exporter::start(&dir, &config);
    let command = healthcheck_command();
    let run = |port: u16| {
        let args: Vec<String> = command[1..]
            .iter()
            .map(|a| a.replace("127.0.0.1:9883", &format!("127.0.0.1:{port}")))
            .collect();
        assert_cmd::Command::from_std(mqtt_pulse())
            .args(&args)
            .timeout(Duration::from_secs(10))
            .output()
            .unwrap()
    };
    let serving = run(exporter.port);
    assert!(serving.status.success(), "{}", text(&serving.stderr));
    let closed = run(free_port());
    assert!(
        !closed.status.success(),
        "healthcheck of a closed port succeeded"
    );
}

// ---------------------------------------------------------------------------------
// scripts/demo
// ---------------------------------------------------------------------------------

/// Pids of the processes whose parent is `pid`, with their command names.
fn children(pid: u32) -> BTreeMap<u32, String> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let child: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            let (comm, rest) = stat.rsplit_once(')')?;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            let name = comm.split_once('(')?.1.to_owned();
            (ppid == pid).then_some((child, name))
        })
        .collect()
}

/// scripts/demo and whatever it started, stopped by pid on drop should the test
/// fail before the script cleans up itself.
struct Demo {
    script: Process,
    started: BTreeMap<u32, String>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if !self.script.exited() {
            let _ = signal::kill(
                Pid::from_raw(self.script.child.id() as i32),
                Signal::SIGTERM,
            );
            poll(Duration::from_secs(15), || {
                self.script.exited().then_some(())
            });
        }
        for pid in self.started.keys() {
            let _ = signal::kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
    }
}

/// The number after `label` up to the next non-digit in `text`.
fn port_after(text: &str, label: &str) -> u16 {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
        + label.len();
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
fn demo_script_runs_the_stack_on_free_ports_and_ctrl_c_leaves_nothing_behind() {
    let dir = TempDir::new("deploy-demo");
    let mqtt_port = free_port();
    let mut demo = Demo {
        script: Process::spawn(
            Command::new(repo("scripts/demo"))
                .arg("--mqtt-port")
                .arg(mqtt_port.to_string())
                .env("MQTT_PULSE_BIN", binary())
                .env("TMPDIR", dir.path()),
            dir.join("demo.out"),
        ),
        started: BTreeMap::new(),
    };
    let output = poll(DEADLINE, || {
        let out = demo.script.log();
        assert!(!demo.script.exited(), "scripts/demo exited:\n{out}");
        out.contains("Ctrl-C stops everything").then_some(out)
    })
    .unwrap_or_else(|| {
        panic!(
            "scripts/demo did not start within {DEADLINE:?}:\n{}",
            demo.script.log()
        )
    });
    demo.started = children(demo.script.child.id());
    assert_eq!(
        demo.started.values().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "mosquitto".to_owned(),
            "mqtt-pulse".to_owned(),
            "prometheus".to_owned()
        ]),
        "{output}"
    );
    let web_port = port_after(&output, "mqtt-pulse   http://127.0.0.1:");
    let prometheus_port = port_after(&output, "Prometheus   http://127.0.0.1:");
    assert_eq!(
        port_after(&output, "MQTT broker  mqtt://127.0.0.1:"),
        mqtt_port
    );
    assert!(!output.contains(":1883"), "{output}");

    // The deploy broker config lets the deploy exporter config in, on our port
    // only; the deploy config's extra label rides along.
    let up = format!(
        r#"mqtt_client_up{{client_id="mqtt-pulse-mosquitto",broker="127.0.0.1:{mqtt_port}",site="demo"}} 1"#
    );
    let page = poll(DEADLINE, || {
        let (_, page) = http_get(web_port, "/metrics").ok()?;
        page.lines().any(|l| l == up).then_some(page)
    })
    .unwrap_or_else(|| panic!("no {up:?} from the demo's exporter:\n{}", demo.script.log()));
    assert!(
        !page.contains(":1883\""),
        "the demo watches the system broker:\n{page}"
    );

    // Its Prometheus scrapes that exporter under the deploy job, with the deploy rules.
    let api = |path: &str| -> Value {
        let (_, body) = http_get(prometheus_port, path).unwrap();
        serde_json::from_str::<Value>(&body).unwrap()["data"].clone()
    };
    // (Prometheus lists a target once service discovery has synced, after ready.)
    let scrape_url = format!("http://127.0.0.1:{web_port}/metrics");
    let scraped = poll(DEADLINE, || {
        let targets = api("/api/v1/targets");
        let urls: Vec<String> = targets["activeTargets"]
            .as_array()?
            .iter()
            .filter(|t| t["labels"]["job"] == JOB)
            .filter_map(|t| t["scrapeUrl"].as_str().map(str::to_owned))
            .collect();
        (!urls.is_empty()).then_some(urls)
    });
    assert_eq!(scraped, Some(vec![scrape_url]), "{}", demo.script.log());
    let rules = api("/api/v1/rules")["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["rules"].as_array().unwrap().len())
        .sum::<usize>();
    assert_eq!(rules, alert_rules().len());

    // Ctrl-C: the script stops all three and removes its temporary directory.
    let temp = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Logs"))
        .and_then(|l| l.trim().split("/{").next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no Logs line in:\n{output}"));
    assert!(
        temp.starts_with(dir.path()) && temp.is_dir(),
        "{}",
        temp.display()
    );
    signal::kill(Pid::from_raw(demo.script.child.id() as i32), Signal::SIGINT).unwrap();
    let status = poll(Duration::from_secs(20), || {
        demo.script.child.try_wait().unwrap()
    })
    .unwrap_or_else(|| {
        panic!(
            "scripts/demo still running after SIGINT:\n{}",
            demo.script.log()
        )
    });
    assert_eq!(status.code(), Some(130), "{}", demo.script.log());
    for (pid, name) in &demo.started {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{name} (pid {pid}) left running"
        );
    }
    assert!(!temp.exists(), "{} left behind", temp.display());
}
