//! `deploy/prometheus/alerts.yml`: `promtool` checks the rules, and their unit
//! tests make every alert fire and stay quiet once; the runbook has a section
//! for each. `deploy/prometheus/recording.yml`: checked, and every recorded
//! series has a unit test.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::{Value, json};

use crate::{read, repo, succeed, yaml_file};

pub(crate) fn alert_rules() -> Vec<Value> {
    let rules = yaml_file(&repo("deploy/prometheus/alerts.yml"));
    rules["groups"]
        .as_array()
        .expect("alerts.yml has groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The recording rules of deploy/prometheus/recording.yml.
pub(crate) fn recording_rules() -> Vec<Value> {
    let rules = yaml_file(&repo("deploy/prometheus/recording.yml"));
    rules["groups"]
        .as_array()
        .expect("recording.yml has groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// GitHub's anchor for a Markdown heading.
pub(crate) fn slug(heading: &str) -> String {
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
fn recording_rules_pass_promtool_and_each_recorded_series_has_a_unit_test() {
    let tests_file = repo("deploy/prometheus/recording_test.yml");
    succeed(
        Command::new("/usr/bin/promtool")
            .arg("check")
            .arg("rules")
            .arg(repo("deploy/prometheus/recording.yml")),
        "prometheus",
    );
    succeed(
        Command::new("/usr/bin/promtool")
            .arg("test")
            .arg("rules")
            .arg(&tests_file),
        "prometheus",
    );
    let recorded: BTreeSet<String> = recording_rules()
        .iter()
        .map(|rule| {
            let name = rule["record"]
                .as_str()
                .unwrap_or_else(|| panic!("not a recording rule: {rule}"));
            assert_eq!(
                name.split(':').count(),
                3,
                "{name}: not level:metric:operations"
            );
            name.to_owned()
        })
        .collect();
    let tests = yaml_file(&tests_file);
    assert_eq!(tests["rule_files"], json!(["recording.yml"]));
    let tested: BTreeSet<String> = tests["tests"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|case| {
            case["promql_expr_test"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|check| {
            check["exp_samples"]
                .as_array()
                .is_some_and(|samples| !samples.is_empty())
        })
        .filter_map(|check| {
            let expr = check["expr"].as_str()?;
            recorded
                .iter()
                .find(|name| expr.contains(name.as_str()))
                .cloned()
        })
        .collect();
    assert_eq!(
        tested, recorded,
        "recorded series with a unit test that has samples"
    );
}
