//! Log output of the daemon: logfmt or JSON lines on standard error, filtered
//! by level, with the keys Prometheus components write — `ts`, `level`
//! (lower case), `msg` — so log pipelines built for node_exporter or
//! Prometheus parse ours:
//!
//! ```text
//! ts=2026-12-01T15:20:26.861032Z level=warn target=mqtt_pulse::connection msg="cannot connect; retrying with backoff" client_id=mqtt-pulse-local reason=connection_refused
//! {"ts":"2026-12-01T15:20:26.861032Z","level":"warn","target":"mqtt_pulse::connection","msg":"cannot connect; retrying with backoff","client_id":"mqtt-pulse-local","reason":"connection_refused"}
//! ```
//!
//! Library code only emits `tracing` events; installing the subscriber is the
//! binary's decision, made once here. The line format is written here (no
//! formatter crate writes `msg`, and tracing-subscriber's JSON nests the
//! fields); it must never drop a field or let a value break a line.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use super::{LogFormat, LogLevel};

/// Installs the process-wide log subscriber. A second call changes nothing.
pub fn init_logging(level: LogLevel, format: LogFormat) {
    let level = match level {
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    };
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .event_format(PrometheusLines { format })
        .with_writer(std::io::stderr);
    // Already installed (say, by an embedding test): keep that one.
    let _ = tracing_subscriber::registry()
        .with(level)
        .with(lines)
        .try_init();
}

/// One line per event: `ts`, `level`, `target`, `msg`, then the event's
/// fields in the order given.
struct PrometheusLines {
    format: LogFormat,
}

impl<S, N> FormatEvent<S, N> for PrometheusLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut ts = String::with_capacity(32);
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        let mut fields = Fields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let mut line = String::with_capacity(256);
        let head = [
            ("ts", Value::Text(ts)),
            (
                "level",
                Value::Text(level_name(*metadata.level()).to_owned()),
            ),
            ("target", Value::Text(metadata.target().to_owned())),
            ("msg", Value::Text(fields.message.unwrap_or_default())),
        ];
        let all = head
            .iter()
            .map(|(name, value)| (*name, value))
            .chain(fields.others.iter().map(|(name, value)| (*name, value)));
        match self.format {
            LogFormat::Logfmt => write_logfmt(&mut line, all),
            LogFormat::Json => write_json(&mut line, all),
        }
        writeln!(writer, "{line}")
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// A field's value: text (quoted as needed) or a number or boolean (bare).
#[derive(Debug, PartialEq)]
enum Value {
    Text(String),
    Bare(String),
}

/// The event's message and its other fields, in order.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    others: Vec<(&'static str, Value)>,
}

impl Fields {
    fn add(&mut self, field: &Field, value: Value) {
        match (field.name(), value) {
            ("message", Value::Text(text) | Value::Bare(text)) => self.message = Some(text),
            (name, value) => self.others.push((name, value)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field, Value::Text(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.add(field, Value::Bare(value.to_string()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.add(field, Value::Bare(value.to_string()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.add(field, Value::Bare(value.to_string()));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: those are text.
        let value = if value.is_finite() {
            Value::Bare(value.to_string())
        } else {
            Value::Text(value.to_string())
        };
        self.add(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%value` fields and the message arrive here, already Display.
        self.add(field, Value::Text(format!("{value:?}")));
    }
}

/// `key=value ...`; a value with a space, `=`, a quote, a backslash or a
/// control character — or an empty one — is quoted, with `"`, `\` and line
/// breaks escaped, as go-logfmt writes them.
fn write_logfmt<'a>(line: &mut String, fields: impl Iterator<Item = (&'a str, &'a Value)>) {
    for (index, (name, value)) in fields.enumerate() {
        if index > 0 {
            line.push(' ');
        }
        line.push_str(name);
        line.push('=');
        let text = match value {
            Value::Text(text) | Value::Bare(text) => text,
        };
        let plain = !text.is_empty()
            && !text
                .chars()
                .any(|c| c == ' ' || c == '=' || c == '"' || c == '\\' || c.is_control());
        if plain {
            line.push_str(text);
            continue;
        }
        push_quoted(line, text, char::is_control);
    }
}

/// One flat JSON object, keys in order.
fn write_json<'a>(line: &mut String, fields: impl Iterator<Item = (&'a str, &'a Value)>) {
    line.push('{');
    for (index, (name, value)) in fields.enumerate() {
        if index > 0 {
            line.push(',');
        }
        push_json_string(line, name);
        line.push(':');
        match value {
            Value::Text(text) => push_json_string(line, text),
            Value::Bare(bare) => line.push_str(bare),
        }
    }
    line.push('}');
}

/// A JSON string: only C0 controls must be escaped there.
fn push_json_string(line: &mut String, text: &str) {
    push_quoted(line, text, |c| u32::from(c) < 0x20);
}

/// `text` in double quotes, with `"`, `\`, line breaks and tabs escaped as
/// both formats write them, and any other character `escaped` picks as
/// `\uXXXX` (every control character is in the Basic Multilingual Plane).
fn push_quoted(line: &mut String, text: &str, escaped: impl Fn(char) -> bool) {
    line.push('"');
    for c in text.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if escaped(c) => {
                let _ = write!(line, "\\u{:04x}", u32::from(c));
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Vec<(&'static str, Value)> {
        vec![
            ("level", Value::Text("warn".into())),
            ("msg", Value::Text("cannot connect; \"retrying\"".into())),
            ("reason", Value::Text("connection_refused".into())),
            ("error", Value::Text("a=b\nc\\d".into())),
            ("empty", Value::Text(String::new())),
            ("failures", Value::Bare("3".into())),
        ]
    }

    #[test]
    fn logfmt_quotes_only_what_needs_it_and_keeps_one_line() {
        let mut line = String::new();
        let fields = fields();
        write_logfmt(&mut line, fields.iter().map(|(k, v)| (*k, v)));
        assert_eq!(
            line,
            r#"level=warn msg="cannot connect; \"retrying\"" reason=connection_refused error="a=b\nc\\d" empty="" failures=3"#
        );
    }

    #[test]
    fn logfmt_escapes_every_control_character_and_json_only_those_it_must() {
        let text = Value::Text("a\u{1}b\u{7f}c\u{85}d".into());
        let mut logfmt = String::new();
        write_logfmt(&mut logfmt, [("v", &text)].into_iter());
        assert_eq!(logfmt, r#"v="a\u0001b\u007fc\u0085d""#);
        let mut json = String::new();
        write_json(&mut json, [("v", &text)].into_iter());
        assert_eq!(json, "{\"v\":\"a\\u0001b\u{7f}c\u{85}d\"}");
    }

    #[test]
    fn json_is_one_flat_object_with_numbers_bare() {
        let mut line = String::new();
        let fields = fields();
        write_json(&mut line, fields.iter().map(|(k, v)| (*k, v)));
        assert_eq!(
            line,
            r#"{"level":"warn","msg":"cannot connect; \"retrying\"","reason":"connection_refused","error":"a=b\nc\\d","empty":"","failures":3}"#
        );
    }
}
