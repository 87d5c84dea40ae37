//! `dashboards/*.json`: current Grafana JSON that uses only the datasource
//! variable. [`Dashboard`] reads them for this and the query test.

use std::collections::BTreeSet;
use std::fs;

use serde_json::{Value, json};

use crate::promql::label_values_query;
use crate::{read, repo};

pub(crate) struct Dashboard {
    pub(crate) file: String,
    pub(crate) json: Value,
}

impl Dashboard {
    pub(crate) fn all() -> Vec<Dashboard> {
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
    pub(crate) fn panels(&self) -> Vec<&Value> {
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
    pub(crate) fn queries(&self) -> Vec<(String, String)> {
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

    pub(crate) fn variables(&self) -> Vec<&Value> {
        self.json["templating"]["list"]
            .as_array()
            .map(|list| list.iter().collect())
            .unwrap_or_default()
    }

    pub(crate) fn variable(&self, name: &str) -> Option<&Value> {
        self.variables().into_iter().find(|v| v["name"] == name)
    }
}

/// The query of a query variable (object or plain-string form).
pub(crate) fn variable_query(variable: &Value) -> String {
    variable["query"]["query"]
        .as_str()
        .or_else(|| variable["query"].as_str())
        .unwrap_or_default()
        .to_owned()
}

pub(crate) fn is_multi(variable: &Value) -> bool {
    variable["multi"] == true || variable["includeAll"] == true
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
