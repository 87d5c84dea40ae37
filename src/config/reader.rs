//! The spanned-tree reader: the TOML parsed into a tree that remembers where
//! each key and value is written, walked one table at a time by
//! [`TableReader`], whose helpers read one value of one type and turn every
//! problem into a `file:line:col` [`ConfigError`].
//!
//! The tree is walked by hand rather than deserialized with serde derive: each
//! message must name the target a key is in, suggest the key that was meant,
//! and never echo a value it was not sure is harmless — serde's "invalid type"
//! messages quote the value, which on a `password` line is the secret.
//!
//! The tables themselves are read in `layer`, `target` and `otlp`, and the
//! whole file in `document`; this module imports none of them. No reader may read a password file's contents, format a
//! `password` or header value, or panic.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use super::error::{ConfigError, Location, Problem};
use super::keys::suggest;
use crate::connection::{FileKind, check_password_file, check_readable};

pub(super) type Key<'i> = Spanned<DeString<'i>>;
pub(super) type Value<'i> = Spanned<DeValue<'i>>;
pub(super) type Span = Range<usize>;
/// What reading one value gives: the value, or the first problem with it.
pub(super) type Read<T> = Result<T, ConfigError>;

/// MQTT strings carry a 16-bit length.
const MQTT_STRING_MAX: usize = 65_535;

/// The walk's context: the text for locations, the origin for messages.
pub(super) struct TableReader<'t> {
    text: &'t str,
    line_starts: Vec<usize>,
    origin: &'t Path,
    /// Where relative file paths start.
    base: &'t Path,
    warnings: Vec<String>,
}

/// The table a key is in, as messages name it.
#[derive(Clone, Debug)]
pub(super) enum Place {
    Top,
    /// A noun phrase: `[defaults]`, `[[target]] "plant-a"`, `` `tls` of [defaults] ``.
    Table(String),
}

impl Place {
    fn noun(&self) -> &str {
        match self {
            Place::Top => "the top level",
            Place::Table(noun) => noun,
        }
    }

    pub(super) fn nested(&self, key: &str) -> Place {
        Place::Table(format!("`{key}` of {}", self.noun()))
    }

    /// The place as a message says it: `in [defaults]`, `at the top level`.
    pub(super) fn phrase(&self) -> String {
        match self {
            Place::Top => "at the top level".to_owned(),
            Place::Table(noun) => format!("in {noun}"),
        }
    }
}

impl<'t> TableReader<'t> {
    /// A reader of `text`, read from `origin`.
    pub(super) fn new(text: &'t str, origin: &'t Path) -> Self {
        TableReader {
            text,
            line_starts: super::error::line_starts(text),
            origin,
            base: origin.parent().unwrap_or(Path::new("")),
            warnings: Vec::new(),
        }
    }

    /// The whole file as a spanned tree, or its syntax error at its place.
    pub(super) fn parse(&self) -> Read<Spanned<DeTable<'t>>> {
        DeTable::parse(self.text).map_err(|error| self.syntax_error(&error))
    }

    /// The warnings the walk gathered, in file order.
    pub(super) fn into_warnings(self) -> Vec<String> {
        self.warnings
    }
}

impl TableReader<'_> {
    pub(super) fn location(&self, span: &Span) -> Location {
        Location::in_lines(self.text, &self.line_starts, span.start)
    }

    pub(super) fn error(&self, span: &Span, problem: Problem) -> ConfigError {
        ConfigError::Invalid {
            path: self.origin.to_owned(),
            location: Some(self.location(span)),
            problem: Box::new(problem),
        }
    }

    /// A problem of the file as a whole, at no one place in it.
    pub(super) fn file_error(&self, problem: Problem) -> ConfigError {
        ConfigError::Invalid {
            path: self.origin.to_owned(),
            location: None,
            problem: Box::new(problem),
        }
    }

    pub(super) fn warn(&mut self, span: &Span, message: String) {
        let Location { line, column } = self.location(span);
        let origin = self.origin.display();
        self.warnings
            .push(format!("{origin}:{line}:{column}: warning: {message}"));
    }

    fn syntax_error(&self, error: &toml::de::Error) -> ConfigError {
        // Only the parser's message, never its Display: that quotes the source
        // line, which may be a password line.
        let mut message = error.message().replace(['\r', '\n'], " ");
        let span = error.span();
        if message == "duplicate key" {
            let key = span.as_ref().and_then(|span| self.text.get(span.clone()));
            if let Some(key) = key.filter(|key| !key.chars().any(char::is_control)) {
                message = format!("duplicate key `{key}`");
            }
        }
        ConfigError::Invalid {
            path: self.origin.to_owned(),
            location: span.map(|span| self.location(&span)),
            problem: Box::new(Problem::Syntax(message)),
        }
    }

    pub(super) fn unknown_key(
        &self,
        key: &Key<'_>,
        place: &Place,
        known: &[&str],
        nested: &[(&str, &[&str])],
    ) -> ConfigError {
        let problem = Problem::UnknownKey {
            key: key_text(key.get_ref()),
            place: place.phrase(),
            suggestion: suggest(key.get_ref(), known, nested),
        };
        self.error(&key.span(), problem)
    }

    pub(super) fn wrong_type(
        &self,
        key: &str,
        place: &Place,
        value: &Value<'_>,
        expected: &'static str,
    ) -> ConfigError {
        let problem = Problem::WrongType {
            key: key_text(key),
            place: place.phrase(),
            expected,
            found: type_name(value.get_ref()),
        };
        self.error(&value.span(), problem)
    }

    pub(super) fn bad_value(
        &self,
        key: &str,
        place: &Place,
        span: &Span,
        reason: String,
    ) -> ConfigError {
        let problem = Problem::BadValue {
            key: key_text(key),
            place: place.phrase(),
            reason,
        };
        self.error(span, problem)
    }

    pub(super) fn string<'a>(&self, key: &str, place: &Place, value: &'a Value) -> Read<&'a str> {
        match value.get_ref() {
            DeValue::String(text) => Ok(text),
            _ => Err(self.wrong_type(key, place, value, "a string")),
        }
    }

    pub(super) fn boolean(&self, key: &str, place: &Place, value: &Value) -> Read<bool> {
        match value.get_ref() {
            DeValue::Boolean(flag) => Ok(*flag),
            _ => Err(self.wrong_type(key, place, value, "true or false")),
        }
    }

    pub(super) fn table<'a, 'i>(
        &self,
        key: &str,
        place: &Place,
        value: &'a Value<'i>,
    ) -> Result<&'a DeTable<'i>, ConfigError> {
        match value.get_ref() {
            DeValue::Table(table) => Ok(table),
            _ => Err(self.wrong_type(key, place, value, "a table")),
        }
    }

    /// A string of at most [`MQTT_STRING_MAX`] bytes. Its value is never
    /// quoted: this reads user names and passwords.
    pub(super) fn mqtt_string(&self, key: &str, place: &Place, value: &Value) -> Read<String> {
        let text = self.string(key, place, value)?;
        if text.len() > MQTT_STRING_MAX {
            let reason = format!("must be at most {MQTT_STRING_MAX} bytes long");
            return Err(self.bad_value(key, place, &value.span(), reason));
        }
        Ok(text.to_owned())
    }

    pub(super) fn duration(&self, key: &str, place: &Place, value: &Value) -> Read<Duration> {
        const EXPECTED: &str = "a duration string such as \"5s\" or \"250ms\"";
        let DeValue::String(text) = value.get_ref() else {
            return Err(self.wrong_type(key, place, value, EXPECTED));
        };
        humantime::parse_duration(text).map_err(|error| {
            let reason =
                format!("{text:?} is not a duration such as \"5s\" or \"250ms\" ({error})");
            self.bad_value(key, place, &value.span(), reason)
        })
    }

    /// A whole number from 0 to `max`.
    pub(super) fn count(&self, key: &str, place: &Place, value: &Value, max: usize) -> Read<usize> {
        let DeValue::Integer(number) = value.get_ref() else {
            return Err(self.wrong_type(key, place, value, "a whole number"));
        };
        let parsed = u64::from_str_radix(number.as_str(), number.radix()).ok();
        match parsed.and_then(|n| usize::try_from(n).ok()) {
            Some(count) if count <= max => Ok(count),
            _ => {
                let reason = format!("must be a whole number from 0 to {max}");
                Err(self.bad_value(key, place, &value.span(), reason))
            }
        }
    }

    /// An MQTT QoS level: 0, 1 or 2.
    pub(super) fn qos(&self, key: &str, place: &Place, value: &Value) -> Read<rumqttc::QoS> {
        match self.count(key, place, value, 2) {
            Ok(0) => Ok(rumqttc::QoS::AtMostOnce),
            Ok(1) => Ok(rumqttc::QoS::AtLeastOnce),
            Ok(_) => Ok(rumqttc::QoS::ExactlyOnce),
            Err(_) => {
                let reason = "must be 0, 1 or 2".to_owned();
                Err(self.bad_value(key, place, &value.span(), reason))
            }
        }
    }

    pub(super) fn positive_duration(
        &self,
        key: &str,
        place: &Place,
        value: &Value,
    ) -> Read<Duration> {
        let duration = self.duration(key, place, value)?;
        if duration.is_zero() {
            let reason = "must be longer than zero".to_owned();
            return Err(self.bad_value(key, place, &value.span(), reason));
        }
        Ok(duration)
    }

    /// A path to a file that can be opened now, resolved against the config
    /// file's directory. A PEM file is opened, never read; a password file
    /// (at most 65,537 bytes) is read, so that a password longer than MQTT
    /// carries is reported here, with the key's place.
    pub(super) fn readable_file(
        &self,
        key: &'static str,
        place: &Place,
        value: &Value<'_>,
    ) -> Result<PathBuf, ConfigError> {
        let written = self.string(key, place, value)?;
        if written.is_empty() {
            let reason = "must name a file".to_owned();
            return Err(self.bad_value(key, place, &value.span(), reason));
        }
        let path = self.base.join(written);
        // Only a regular file of a sane size; a FIFO is refused, not waited on.
        let checked = if key == "password_file" {
            check_password_file(&path)
        } else {
            check_readable(&path, FileKind::Pem)
        };
        checked.map_err(|source| {
            let problem = Problem::UnreadableFile {
                key,
                place: place.phrase(),
                path: path.clone(),
                source,
            };
            self.error(&value.span(), problem)
        })?;
        Ok(path)
    }
}

/// A table's entries in the order they are written, so the first problem in
/// the file is the one reported.
pub(super) fn in_file_order<'a, 'i>(table: &'a DeTable<'i>) -> Vec<(&'a Key<'i>, &'a Value<'i>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// A key as messages show it: bare if it is a plain key, quoted and escaped
/// otherwise, so a message stays one line.
pub(super) fn key_text(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_keys_are_quoted_and_escaped() {
        assert_eq!(key_text("keep_alive"), "keep_alive");
        assert_eq!(key_text("a b"), "\"a b\"");
        assert_eq!(key_text("a\nb"), "\"a\\nb\"");
        assert_eq!(key_text(""), "\"\"");
    }
}
