//! Every query of every dashboard and rule, run by a real Prometheus (loaded
//! with the deploy config and rules) scraping the real exporter, which watches
//! real Mosquitto brokers.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use serde_json::Value;

use crate::alerts::alert_rules;
use crate::dashboards::{Dashboard, is_multi, variable_query};
use crate::promql::{label_values_query, metric_names, regex_alternation, substitute};
use crate::support::http::percent_encode;
use crate::support::prometheus::Prometheus;
use crate::support::{Broker, TempDir, TestPki};
use crate::{
    BUILTIN_VARIABLES, DEADLINE, JOB, SYNTHETIC_METRICS, await_sample, exporter, poll, read, repo,
};

/// Replaces `from` with `to` in `source`, which must contain it exactly once.
pub(crate) fn replace_once(source: &str, from: &str, to: &str, file: &str) -> String {
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
    // A TLS broker, so the certificate-expiry panel and rule have data.
    let pki = TestPki::generate(dir.join("pki"));
    let secure = Broker::builder().tls(pki.server_files()).start();
    let secure_label = secure.url().trim_start_matches("mqtts://").to_owned();
    // A broker for the probe and path panels: "left" probes itself and
    // publishes a path's messages that "right", on the same broker, receives.
    let shared = Broker::start();
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
             [[target]]\nname = \"lost\"\nurl = \"{doomed}\"\n\
             [[target]]\nname = \"secure\"\nurl = \"{secure}\"\ntls = {{ ca_file = \"{ca}\" }}\n\
             [[target]]\nname = \"left\"\nurl = \"{shared}\"\n\
             [target.probe]\ninterval = \"200ms\"\n\
             [[target]]\nname = \"right\"\nurl = \"{shared}\"\n\
             [[path]]\nfrom = \"left\"\nto = \"right\"\ninterval = \"200ms\"\n",
            shared = shared.url(),
            auth = auth.url(),
            doomed = doomed.url(),
            secure = secure.url(),
            ca = pki.ca_pem_path.display(),
        ),
    )
    .unwrap();
    let exporter = exporter(&dir, &config);
    let lost_up = format!(
        r#"mqtt_client_up{{client_id="mqtt-pulse-lost",broker="{}"}}"#,
        doomed.addr()
    );
    await_sample(&exporter, &lost_up, "1");
    doomed.kill();
    await_sample(&exporter, &lost_up, "0");

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
            format!("\"127.0.0.1:{}\"", exporter.port()),
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
        r#"mqtt_client_tls_cert_expiry_timestamp_seconds{client_id="mqtt-pulse-secure"}"#.into(),
        r#"increase(mqtt_client_roundtrip_seconds_count{client_id="mqtt-pulse-left"}[5s]) > 0"#
            .into(),
        r#"increase(mqtt_path_latency_seconds_count{path="left->right"}[5s]) > 0"#.into(),
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
        exporter.stderr()
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
            BTreeSet::from([format!("127.0.0.1:{}", exporter.port())]),
        ),
        (
            "broker",
            BTreeSet::from([
                auth.addr(),
                doomed.addr(),
                secure_label.clone(),
                shared.addr(),
            ]),
        ),
        (
            "client_id",
            [
                "mqtt-pulse-healthy",
                "mqtt-pulse-wrong-password",
                "mqtt-pulse-lost",
                "mqtt-pulse-secure",
                "mqtt-pulse-left",
                "mqtt-pulse-right",
            ]
            .map(String::from)
            .into(),
        ),
        ("path", BTreeSet::from(["left->right".to_owned()])),
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
    let page = exporter.metrics().text;
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
        "mqtt_client_tls_cert_expiry_timestamp_seconds",
        "mqtt_client_roundtrip_seconds_bucket",
        "mqtt_client_roundtrip_messages_total",
        "mqtt_client_roundtrip_sent_total",
        "mqtt_client_roundtrip_last_success_timestamp_seconds",
        "mqtt_path_latency_seconds_bucket",
        "mqtt_path_messages_total",
        "mqtt_path_sent_total",
        "mqtt_path_last_success_timestamp_seconds",
        "mqtt_pulse_build_info",
    ] {
        assert!(used.contains_key(family), "nothing queries {family}");
    }
}
