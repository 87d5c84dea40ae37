//! Reading a Prometheus text page (`/metrics`): [`Metrics`] parses every sample
//! with its labels; [`sample`] finds one series written exactly as rendered.

use std::collections::BTreeMap;

/// The value of the one sample whose name and labels are exactly `series` (as
/// rendered: `name{a="x",b="y"}`, or `name`), if the page has it. Panics if the
/// page has it twice.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    let mut values = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name_and_labels, value) = line.rsplit_once(' ')?;
            (name_and_labels == series).then_some(value)
        });
    let value = values.next()?;
    assert!(
        values.next().is_none(),
        "{series} twice on the page:\n{text}"
    );
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{series} is {value:?}")),
    )
}

/// One sample of a `/metrics` page.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A scraped `/metrics` page.
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    pub fn parse(text: String) -> Metrics {
        let samples = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| parse_sample(line).unwrap_or_else(|| panic!("unparsable line {line:?}")))
            .collect();
        Metrics { text, samples }
    }

    /// The value of the one sample called `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut matching = self.samples.iter().filter(|sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value))
        });
        let found = matching.next()?;
        assert!(
            matching.next().is_none(),
            "more than one {name} with {labels:?}:\n{}",
            self.text
        );
        Some(found.value)
    }

    pub fn up(&self, client_id: &str) -> Option<f64> {
        self.value("mqtt_client_up", &[("client_id", client_id)])
    }

    pub fn status_changes(&self, client_id: &str, status: &str) -> Option<f64> {
        self.value(
            "mqtt_client_status_changes_total",
            &[("client_id", client_id), ("status", status)],
        )
    }

    pub fn reload_successful(&self) -> Option<f64> {
        self.value("mqtt_pulse_config_last_reload_successful", &[])
    }

    /// This client's `mqtt_client_connect_failures_total` series: each reason
    /// label with its count, sorted by reason.
    pub fn connect_failures(&self, client_id: &str) -> Vec<(String, f64)> {
        let mut failures: Vec<(String, f64)> = self
            .samples
            .iter()
            .filter(|sample| {
                sample.name == "mqtt_client_connect_failures_total"
                    && sample.labels.get("client_id").map(String::as_str) == Some(client_id)
            })
            .map(|sample| {
                let reason = sample.labels.get("reason").cloned().unwrap_or_default();
                (reason, sample.value)
            })
            .collect();
        failures.sort_by(|a, b| a.0.cmp(&b.0));
        failures
    }

    /// Whether any series carries this client id.
    pub fn has_client(&self, client_id: &str) -> bool {
        self.samples
            .iter()
            .any(|sample| sample.labels.get("client_id").map(String::as_str) == Some(client_id))
    }
}

/// `name{a="x",b="y"} value` or `name value` (no timestamps on this page).
pub fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        number => number.parse().ok()?,
    };
    let Some((name, rest)) = series.split_once('{') else {
        return Some(Sample {
            name: series.to_owned(),
            labels: BTreeMap::new(),
            value,
        });
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.strip_suffix('}')?.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        }
        labels.insert(key, value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}
