//! `[[path]]`: each table read into a [`PathConfig`] — its name, where it is
//! written, the names of its two targets and its [`PathOptions`] — and the
//! rules across paths: `from` and `to` name two different existing targets,
//! names are unique, and there are at most [`MAX_PATHS`](super::MAX_PATHS).

use std::collections::HashMap;

use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, Problem};
use super::keys::PATH_KEYS;
use super::reader::{Place, Span, TableReader, Value, in_file_order};
use super::{MAX_PATHS, PathConfig, TargetConfig};
use crate::connection::{MAX_LABEL_VALUE_LENGTH, PathOptions};

/// What a path's keys say before the whole path is checked.
struct WrittenPath {
    from: Option<(String, Span)>,
    to: Option<(String, Span)>,
    name: Option<(String, Span)>,
}

impl TableReader<'_> {
    /// Every `[[path]]`, checked against the `targets` already read.
    pub(super) fn paths(
        &mut self,
        value: Option<&Value<'_>>,
        targets: &[TargetConfig],
    ) -> Result<Vec<PathConfig>, ConfigError> {
        let Some(value) = value else {
            return Ok(Vec::new());
        };
        let DeValue::Array(items) = value.get_ref() else {
            let expected = "an array of tables, written [[path]]";
            return Err(self.wrong_type("path", &Place::Top, value, expected));
        };
        if let Some(first_too_many) = items.get(MAX_PATHS) {
            let problem = Problem::TooManyPaths {
                count: items.len(),
                max: MAX_PATHS,
            };
            return Err(self.error(&first_too_many.span(), problem));
        }
        // Name → line of the path that has it.
        let mut names = HashMap::new();
        let mut paths = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            paths.push(self.path(index, item, targets, &mut names)?);
        }
        Ok(paths)
    }

    fn path(
        &mut self,
        index: usize,
        item: &Value<'_>,
        targets: &[TargetConfig],
        names: &mut HashMap<String, usize>,
    ) -> Result<PathConfig, ConfigError> {
        let DeValue::Table(table) = item.get_ref() else {
            return Err(self.wrong_type("path", &Place::Top, item, "a table"));
        };
        let header = item.span();
        let unnamed = Place::Table(format!("[[path]] #{}", index + 1));
        let written = self.path_ends(table, &unnamed)?;
        let missing = |key| Problem::MissingKey {
            key,
            place: unnamed.phrase(),
        };
        let Some((from, from_span)) = written.from else {
            return Err(self.error(&header, missing("from")));
        };
        let Some((to, to_span)) = written.to else {
            return Err(self.error(&header, missing("to")));
        };
        let (name, name_span) = written
            .name
            .unwrap_or_else(|| (format!("{from}->{to}"), header.clone()));
        if name.len() > MAX_LABEL_VALUE_LENGTH {
            let reason = format!(
                "must be at most {MAX_LABEL_VALUE_LENGTH} bytes long (it is the path label of \
                 every series of the path); set a shorter `name`"
            );
            return Err(self.bad_value("name", &unnamed, &name_span, reason));
        }
        let place = Place::Table(format!("[[path]] {name:?}"));
        let Some(from_target) = targets.iter().find(|t| t.name() == from) else {
            let reason = format!("no [[target]] is named {from:?}");
            return Err(self.bad_value("from", &place, &from_span, reason));
        };
        let Some(to_target) = targets.iter().find(|t| t.name() == to) else {
            let reason = format!("no [[target]] is named {to:?}");
            return Err(self.bad_value("to", &place, &to_span, reason));
        };
        if from == to {
            let reason = "must name another target than `from`; a target's own round trip is \
                          its [target.probe]"
                .to_owned();
            return Err(self.bad_value("to", &place, &to_span, reason));
        }
        let line = self.location(&name_span).line;
        if let Some(&first_line) = names.get(&name) {
            let problem = Problem::DuplicatePath { name, first_line };
            return Err(self.error(&name_span, problem));
        }
        names.insert(name.clone(), line);

        let mut options = PathOptions::new(name.clone());
        for (key, value) in in_file_order(table) {
            match key.get_ref().as_ref() {
                "name" | "from" | "to" => {}
                "topic" => {
                    let topic = self.mqtt_string("topic", &place, value)?;
                    options = options.with_topic(topic);
                }
                "interval" => {
                    options =
                        options.with_interval(self.positive_duration("interval", &place, value)?)
                }
                "timeout" => {
                    options =
                        options.with_timeout(self.positive_duration("timeout", &place, value)?)
                }
                "qos" => options = options.with_qos(self.qos("qos", &place, value)?),
                _ => return Err(self.unknown_key(key, &place, PATH_KEYS, &[])),
            }
        }
        let keep_alive = from_target.options().keep_alive();
        let from_id = from_target.options().client_id().as_str();
        let to_id = to_target.options().client_id().as_str();
        if let Some((key, reason)) = options.problem_between(keep_alive, from_id, to_id) {
            let span = table
                .get(key)
                .map_or_else(|| header.clone(), |value| value.span());
            return Err(self.bad_value(key, &place, &span, reason));
        }
        Ok(PathConfig {
            name,
            location: self.location(&header),
            from,
            to,
            options,
        })
    }

    /// `from`, `to` and `name`, read first so that every other message can
    /// name the path; unknown keys wait for the second pass, which names it.
    fn path_ends(&self, table: &DeTable<'_>, place: &Place) -> Result<WrittenPath, ConfigError> {
        let mut written = WrittenPath {
            from: None,
            to: None,
            name: None,
        };
        for (key, value) in in_file_order(table) {
            let slot = match key.get_ref().as_ref() {
                "from" => &mut written.from,
                "to" => &mut written.to,
                "name" => &mut written.name,
                _ => continue,
            };
            let key = key.get_ref().as_ref();
            let text = self.string(key, place, value)?;
            if text.is_empty() || text.chars().any(char::is_control) {
                let reason = "must be a non-empty name without control characters".to_owned();
                return Err(self.bad_value(key, place, &value.span(), reason));
            }
            *slot = Some((text.to_owned(), value.span()));
        }
        Ok(written)
    }
}
