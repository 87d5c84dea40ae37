//! Reading the TOML tree into validated targets, one table at a time.
//!
//! The tree is walked by hand rather than deserialized with serde derive: each
//! message must name the target a key is in, suggest the key that was meant,
//! and never echo a value it was not sure is harmless — serde's "invalid type"
//! messages quote the value, which on a `password` line is the secret.
//!
//! It owns the rules of each key; it must never read a password file's
//! contents, never format a `password` or header value, and never panic.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};
use url::Url;

use super::error::{ConfigError, Location, Problem};
use super::{
    CLIENT_ID_PREFIX, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEP_ALIVE, OtlpConfig, OtlpProtocol,
    PasswordSource, TargetConfig, TargetSettings,
};
use crate::connection::{Backoff, ClientAuth, ConnectionOptions, TlsOptions};
use crate::events::ClientId;

type Key<'i> = Spanned<DeString<'i>>;
type Value<'i> = Spanned<DeValue<'i>>;
type Span = Range<usize>;

const TOP_KEYS: &[&str] = &["defaults", "target", "otlp"];
/// Keys a `[[target]]` has and `[defaults]` has not.
const TARGET_ONLY_KEYS: &[&str] = &[
    "name",
    "url",
    "client_id",
    "username",
    "password",
    "password_file",
];
/// Keys of both `[defaults]` and `[[target]]`.
const LAYER_KEYS: &[&str] = &[
    "keep_alive",
    "connect_timeout",
    "ping_timeout",
    "backoff",
    "clean_session",
    "labels",
    "tls",
];
const BACKOFF_KEYS: &[&str] = &["initial", "max"];
const TLS_KEYS: &[&str] = &["ca_file", "cert_file", "key_file", "insecure_skip_verify"];
/// Keys of sub-tables, suggested as dotted keys when written one level up.
const NESTED_KEYS: &[(&str, &[&str])] = &[("tls", TLS_KEYS), ("backoff", BACKOFF_KEYS)];
const OTLP_KEYS: &[&str] = &["endpoint", "protocol", "interval", "timeout", "headers"];
/// The labels mqtt-pulse's own metrics carry; a constant label may not reuse them.
/// MQTT strings carry a 16-bit length.
const MQTT_STRING_MAX: usize = 65_535;

/// What a config file holds once every rule has passed.
pub(super) struct Parsed {
    pub(super) targets: Vec<TargetConfig>,
    pub(super) otlp: Option<OtlpConfig>,
    pub(super) warnings: Vec<String>,
}

/// Validates the config `text` read from `origin`.
pub(super) fn document(text: &str, origin: &Path) -> Result<Parsed, ConfigError> {
    let mut reader = Reader {
        text,
        line_starts: super::error::line_starts(text),
        origin,
        base: origin.parent().unwrap_or(Path::new("")),
        warnings: Vec::new(),
    };
    let root = DeTable::parse(text).map_err(|error| reader.syntax_error(&error))?;
    let root = root.get_ref();
    for (key, _) in in_file_order(root) {
        if !TOP_KEYS.contains(&key.get_ref().as_ref()) {
            return Err(reader.unknown_key(key, &Place::Top, TOP_KEYS, &[]));
        }
    }
    let defaults = match root.get("defaults") {
        Some(value) => reader.defaults(value)?,
        None => Defaults::builtin(),
    };
    let targets = reader.targets(root.get("target"), &defaults)?;
    let otlp = root
        .get("otlp")
        .map(|value| reader.otlp(value))
        .transpose()?;
    Ok(Parsed {
        targets,
        otlp,
        warnings: reader.warnings,
    })
}

/// The walk's context: the text for locations, the origin for messages.
struct Reader<'t> {
    text: &'t str,
    line_starts: Vec<usize>,
    origin: &'t Path,
    /// Where relative file paths start.
    base: &'t Path,
    warnings: Vec<String>,
}

/// The table a key is in, as messages name it.
#[derive(Clone, Debug)]
enum Place {
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

    fn nested(&self, key: &str) -> Place {
        Place::Table(format!("`{key}` of {}", self.noun()))
    }

    /// The place as a message says it: `in [defaults]`, `at the top level`.
    fn phrase(&self) -> String {
        match self {
            Place::Top => "at the top level".to_owned(),
            Place::Table(noun) => format!("in {noun}"),
        }
    }
}

/// The settings `[defaults]` and `[[target]]` share, as written in one table.
#[derive(Default)]
struct Layer {
    keep_alive: Option<Duration>,
    connect_timeout: Option<Duration>,
    ping_timeout: Option<Duration>,
    backoff_initial: Option<Spanned<Duration>>,
    backoff_max: Option<Spanned<Duration>>,
    clean_session: Option<bool>,
    labels: BTreeMap<String, String>,
    tls: Option<TlsLayer>,
}

/// A `tls` table as written.
#[derive(Default)]
struct TlsLayer {
    span: Span,
    ca_file: Option<PathBuf>,
    client_auth: Option<ClientAuth>,
    insecure_skip_verify: Option<bool>,
}

/// `[defaults]` with the built-in defaults filled in.
struct Defaults {
    layer: Layer,
    backoff: Backoff,
}

impl Defaults {
    fn builtin() -> Defaults {
        Defaults {
            layer: Layer::default(),
            backoff: Backoff::default(),
        }
    }
}

/// Names and client ids seen so far, for the duplicate checks.
#[derive(Default)]
struct Seen {
    /// Name → line of its `name`.
    names: HashMap<String, usize>,
    /// Client id → (target name, line, derived from the name).
    client_ids: HashMap<ClientId, (String, usize, bool)>,
}

/// The keys of one `[[target]]` as written, before defaults are applied.
#[derive(Default)]
struct WrittenTarget {
    url: Option<Url>,
    client_id: Option<Spanned<ClientId>>,
    username: Option<String>,
    /// The password's source and the span of its key.
    password: Option<(PasswordSource, Span)>,
    layer: Layer,
}

impl Reader<'_> {
    fn location(&self, span: &Span) -> Location {
        Location::in_lines(self.text, &self.line_starts, span.start)
    }

    fn error(&self, span: &Span, problem: Problem) -> ConfigError {
        ConfigError::Invalid {
            path: self.origin.to_owned(),
            location: Some(self.location(span)),
            problem: Box::new(problem),
        }
    }

    fn warn(&mut self, span: &Span, message: String) {
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

    fn unknown_key(
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

    fn wrong_type(
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

    fn bad_value(&self, key: &str, place: &Place, span: &Span, reason: String) -> ConfigError {
        let problem = Problem::BadValue {
            key: key_text(key),
            place: place.phrase(),
            reason,
        };
        self.error(span, problem)
    }

    fn string<'a>(
        &self,
        key: &str,
        place: &Place,
        value: &'a Value<'_>,
    ) -> Result<&'a str, ConfigError> {
        match value.get_ref() {
            DeValue::String(text) => Ok(text),
            _ => Err(self.wrong_type(key, place, value, "a string")),
        }
    }

    fn boolean(&self, key: &str, place: &Place, value: &Value<'_>) -> Result<bool, ConfigError> {
        match value.get_ref() {
            DeValue::Boolean(flag) => Ok(*flag),
            _ => Err(self.wrong_type(key, place, value, "true or false")),
        }
    }

    fn table<'a, 'i>(
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
    fn mqtt_string(
        &self,
        key: &str,
        place: &Place,
        value: &Value<'_>,
    ) -> Result<String, ConfigError> {
        let text = self.string(key, place, value)?;
        if text.len() > MQTT_STRING_MAX {
            let reason = format!("must be at most {MQTT_STRING_MAX} bytes long");
            return Err(self.bad_value(key, place, &value.span(), reason));
        }
        Ok(text.to_owned())
    }

    fn duration(
        &self,
        key: &str,
        place: &Place,
        value: &Value<'_>,
    ) -> Result<Duration, ConfigError> {
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

    fn positive_duration(
        &self,
        key: &str,
        place: &Place,
        value: &Value<'_>,
    ) -> Result<Duration, ConfigError> {
        let duration = self.duration(key, place, value)?;
        if duration.is_zero() {
            let reason = "must be longer than zero".to_owned();
            return Err(self.bad_value(key, place, &value.span(), reason));
        }
        Ok(duration)
    }

    /// A path to a file that can be opened now, resolved against the config
    /// file's directory. The file is opened, never read.
    fn readable_file(
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
        let opened = std::fs::File::open(&path).and_then(|file| file.metadata());
        let problem = |source| Problem::UnreadableFile {
            key,
            place: place.phrase(),
            path: path.clone(),
            source,
        };
        match opened {
            Ok(metadata) if metadata.is_dir() => Err(self.error(
                &value.span(),
                problem(std::io::ErrorKind::IsADirectory.into()),
            )),
            Ok(_) => Ok(path),
            Err(source) => Err(self.error(&value.span(), problem(source))),
        }
    }

    fn defaults(&mut self, value: &Value<'_>) -> Result<Defaults, ConfigError> {
        let place = Place::Table("[defaults]".to_owned());
        let table = self.table("defaults", &Place::Top, value)?;
        let mut layer = Layer::default();
        for (key, value) in in_file_order(table) {
            let name = key.get_ref().as_ref();
            if self.layer_entry(&mut layer, name, value, &place)? {
                continue;
            }
            if TARGET_ONLY_KEYS.contains(&name) {
                let problem = Problem::NotADefault {
                    key: name.to_owned(),
                };
                return Err(self.error(&key.span(), problem));
            }
            return Err(self.unknown_key(key, &place, LAYER_KEYS, NESTED_KEYS));
        }
        let backoff = self.backoff(&layer, Backoff::default(), &place)?;
        Ok(Defaults { layer, backoff })
    }

    /// Reads `key` if it is one of the keys `[defaults]` and `[[target]]`
    /// share; `false` if it is not.
    fn layer_entry(
        &mut self,
        layer: &mut Layer,
        key: &str,
        value: &Value<'_>,
        place: &Place,
    ) -> Result<bool, ConfigError> {
        match key {
            "keep_alive" => {
                let keep_alive = self.duration(key, place, value)?;
                if keep_alive.subsec_nanos() != 0 || !(1..=65_535).contains(&keep_alive.as_secs()) {
                    let reason = format!(
                        "must be whole seconds from 1s to 65535s, not {}",
                        humantime::format_duration(keep_alive)
                    );
                    return Err(self.bad_value(key, place, &value.span(), reason));
                }
                layer.keep_alive = Some(keep_alive);
            }
            "connect_timeout" => {
                layer.connect_timeout = Some(self.positive_duration(key, place, value)?)
            }
            "ping_timeout" => layer.ping_timeout = Some(self.positive_duration(key, place, value)?),
            "clean_session" => layer.clean_session = Some(self.boolean(key, place, value)?),
            "backoff" => {
                let inner = place.nested(key);
                for (key, value) in in_file_order(self.table("backoff", place, value)?) {
                    let name = key.get_ref().as_ref();
                    let duration = match name {
                        "initial" | "max" => self.positive_duration(name, &inner, value)?,
                        _ => return Err(self.unknown_key(key, &inner, BACKOFF_KEYS, &[])),
                    };
                    let duration = Some(Spanned::new(value.span(), duration));
                    if name == "initial" {
                        layer.backoff_initial = duration;
                    } else {
                        layer.backoff_max = duration;
                    }
                }
            }
            "labels" => layer.labels = self.labels(value, place)?,
            "tls" => layer.tls = Some(self.tls(value, place)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The backoff of `layer` over `inherited`, checking that `max` is not
    /// below `initial`. The error points at whichever of the two this layer set.
    fn backoff(
        &self,
        layer: &Layer,
        inherited: Backoff,
        place: &Place,
    ) -> Result<Backoff, ConfigError> {
        let backoff = Backoff {
            initial: layer
                .backoff_initial
                .as_ref()
                .map_or(inherited.initial, |d| *d.get_ref()),
            max: layer
                .backoff_max
                .as_ref()
                .map_or(inherited.max, |d| *d.get_ref()),
        };
        if backoff.max >= backoff.initial {
            return Ok(backoff);
        }
        let inner = place.nested("backoff");
        let (key, span, reason) = match (&layer.backoff_max, &layer.backoff_initial) {
            (Some(max), _) => (
                "max",
                max.span(),
                format!(
                    "must not be shorter than `initial` ({})",
                    humantime::format_duration(backoff.initial)
                ),
            ),
            (None, Some(initial)) => (
                "initial",
                initial.span(),
                format!(
                    "must not be longer than `max` ({})",
                    humantime::format_duration(backoff.max)
                ),
            ),
            // Neither is set here, so `inherited` was already checked.
            (None, None) => return Ok(inherited),
        };
        Err(self.bad_value(key, &inner, &span, reason))
    }

    fn labels(
        &mut self,
        value: &Value<'_>,
        place: &Place,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let inner = place.nested("labels");
        let mut labels = BTreeMap::new();
        for (key, value) in in_file_order(self.table("labels", place, value)?) {
            let name = key.get_ref().as_ref();
            if let Some(reason) = label_name_problem(name) {
                let problem = Problem::BadLabel {
                    name: key_text(name),
                    place: inner.phrase(),
                    reason,
                };
                return Err(self.error(&key.span(), problem));
            }
            let text = self.string(name, &inner, value)?;
            if let Some(reason) = crate::exporter::label_value_problem(text) {
                return Err(self.bad_value(name, &inner, &value.span(), reason.to_owned()));
            }
            if matches!(name, "job" | "instance") {
                // Prometheus sets these from the scrape config and, unless it
                // has `honor_labels: true`, renames ours to `exported_*`.
                let message = format!(
                    "label `{name}` {}: Prometheus renames it to `exported_{name}` unless the \
                     scrape config sets `honor_labels: true`",
                    inner.phrase()
                );
                self.warn(&key.span(), message);
            }
            labels.insert(name.to_owned(), text.to_owned());
        }
        Ok(labels)
    }

    fn tls(&mut self, value: &Value<'_>, place: &Place) -> Result<TlsLayer, ConfigError> {
        let inner = place.nested("tls");
        let mut tls = TlsLayer {
            span: value.span(),
            ..TlsLayer::default()
        };
        let mut cert_file = None;
        let mut key_file = None;
        for (key, value) in in_file_order(self.table("tls", place, value)?) {
            match key.get_ref().as_ref() {
                "ca_file" => tls.ca_file = Some(self.readable_file("ca_file", &inner, value)?),
                "cert_file" => {
                    let path = self.readable_file("cert_file", &inner, value)?;
                    cert_file = Some((path, key.span()));
                }
                "key_file" => {
                    let path = self.readable_file("key_file", &inner, value)?;
                    key_file = Some((path, key.span()));
                }
                "insecure_skip_verify" => {
                    let skip = self.boolean("insecure_skip_verify", &inner, value)?;
                    if skip {
                        let message = format!(
                            "`insecure_skip_verify` is on {}: the broker's certificate is not verified",
                            inner.phrase()
                        );
                        self.warn(&key.span(), message);
                    }
                    tls.insecure_skip_verify = Some(skip);
                }
                _ => return Err(self.unknown_key(key, &inner, TLS_KEYS, &[])),
            }
        }
        let unpaired = |present, missing, span: &Span| {
            let problem = Problem::Unpaired {
                present,
                missing,
                place: inner.phrase(),
                advice: "set both for a client certificate, or neither",
            };
            self.error(span, problem)
        };
        tls.client_auth = match (cert_file, key_file) {
            (Some((cert_file, _)), Some((key_file, _))) => Some(ClientAuth {
                cert_file,
                key_file,
            }),
            (Some((_, span)), None) => return Err(unpaired("cert_file", "key_file", &span)),
            (None, Some((_, span))) => return Err(unpaired("key_file", "cert_file", &span)),
            (None, None) => None,
        };
        Ok(tls)
    }

    fn targets(
        &mut self,
        value: Option<&Value<'_>>,
        defaults: &Defaults,
    ) -> Result<Vec<TargetConfig>, ConfigError> {
        let Some(value) = value else {
            return Err(ConfigError::Invalid {
                path: self.origin.to_owned(),
                location: None,
                problem: Box::new(Problem::NoTargets),
            });
        };
        let DeValue::Array(items) = value.get_ref() else {
            let expected = "an array of tables, written [[target]]";
            return Err(self.wrong_type("target", &Place::Top, value, expected));
        };
        if items.is_empty() {
            return Err(self.error(&value.span(), Problem::NoTargets));
        }
        if let Some(first_too_many) = items.get(super::MAX_TARGETS) {
            let problem = Problem::TooManyTargets {
                count: items.len(),
                max: super::MAX_TARGETS,
            };
            return Err(self.error(&first_too_many.span(), problem));
        }
        let mut seen = Seen::default();
        let mut targets = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            targets.push(self.target(index, item, defaults, &mut seen)?);
        }
        Ok(targets)
    }

    fn target(
        &mut self,
        index: usize,
        item: &Value<'_>,
        defaults: &Defaults,
        seen: &mut Seen,
    ) -> Result<TargetConfig, ConfigError> {
        let DeValue::Table(table) = item.get_ref() else {
            return Err(self.wrong_type("target", &Place::Top, item, "a table"));
        };
        let header = item.span();
        let name_value = self.target_name(index, table, &header, seen)?;
        let name = name_value.get_ref();
        let place = Place::Table(format!("[[target]] {name:?}"));
        let written = self.target_keys(table, &place)?;
        let Some(url) = written.url else {
            let problem = Problem::MissingKey {
                key: "url",
                place: place.phrase(),
            };
            return Err(self.error(&header, problem));
        };
        self.check_password(&written.username, &written.password, &place)?;
        let client_id = self.unique_client_id(&name_value, written.client_id, &place, seen)?;

        let layer = written.layer;
        let own_tls = layer.tls.as_ref();
        let tls = self.merged_tls(&url, own_tls, defaults.layer.tls.as_ref(), &place)?;
        let backoff = self.backoff(&layer, defaults.backoff, &place)?;
        let mut labels = defaults.layer.labels.clone();
        labels.extend(layer.labels);
        let inherited = &defaults.layer;
        let settings = TargetSettings {
            name: name.clone(),
            url,
            client_id,
            username: written.username,
            password: written.password.map(|(source, _)| source),
            keep_alive: (layer.keep_alive.or(inherited.keep_alive)).unwrap_or(DEFAULT_KEEP_ALIVE),
            connect_timeout: (layer.connect_timeout.or(inherited.connect_timeout))
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            ping_timeout: layer.ping_timeout.or(inherited.ping_timeout),
            backoff,
            clean_session: (layer.clean_session.or(inherited.clean_session)).unwrap_or(true),
            labels,
            tls,
        };
        // Every rule the builder has was checked above; should they ever
        // disagree, this is still an error, not a panic.
        let options = settings
            .connection_options()
            .map_err(|error| self.bad_value("url", &place, &header, error.to_string()))?;
        Ok(TargetConfig {
            settings,
            line: self.location(&header).line,
            options,
        })
    }

    /// The target's `name`, read first so that every other message can name
    /// the target; unique among the targets.
    fn target_name(
        &self,
        index: usize,
        table: &DeTable<'_>,
        header: &Span,
        seen: &mut Seen,
    ) -> Result<Spanned<String>, ConfigError> {
        let unnamed = Place::Table(format!("[[target]] #{}", index + 1));
        let Some(value) = table.get("name") else {
            let problem = Problem::MissingKey {
                key: "name",
                place: unnamed.phrase(),
            };
            return Err(self.error(header, problem));
        };
        let name = self.string("name", &unnamed, value)?;
        if let Some(reason) = text_problem(name) {
            return Err(self.bad_value("name", &unnamed, &value.span(), reason));
        }
        if let Some(&first_line) = seen.names.get(name) {
            let problem = Problem::DuplicateName {
                name: name.to_owned(),
                first_line,
            };
            return Err(self.error(&value.span(), problem));
        }
        let line = self.location(&value.span()).line;
        seen.names.insert(name.to_owned(), line);
        Ok(Spanned::new(value.span(), name.to_owned()))
    }

    /// Every key of a `[[target]]` but `name`, each checked on its own.
    fn target_keys(
        &mut self,
        table: &DeTable<'_>,
        place: &Place,
    ) -> Result<WrittenTarget, ConfigError> {
        let mut written = WrittenTarget::default();
        for (key, value) in in_file_order(table) {
            let key_name = key.get_ref().as_ref();
            match key_name {
                "name" => {}
                "url" => {
                    let text = self.string("url", place, value)?;
                    written.url = Some(self.url(text, place, &value.span())?);
                }
                "client_id" => {
                    let id = self.string("client_id", place, value)?;
                    if let Some(reason) = text_problem(id).or_else(|| client_id_length_problem(id))
                    {
                        return Err(self.bad_value("client_id", place, &value.span(), reason));
                    }
                    written.client_id = Some(Spanned::new(value.span(), ClientId::from(id)));
                }
                "username" => written.username = Some(self.mqtt_string("username", place, value)?),
                "password" | "password_file" => {
                    let source = if key_name == "password" {
                        PasswordSource::Inline(self.mqtt_string("password", place, value)?)
                    } else {
                        PasswordSource::File(self.readable_file("password_file", place, value)?)
                    };
                    if let Some((first, _)) = &written.password {
                        let problem = Problem::Conflict {
                            first: first.key(),
                            second: source.key(),
                            place: place.phrase(),
                        };
                        return Err(self.error(&key.span(), problem));
                    }
                    written.password = Some((source, key.span()));
                }
                _ => {
                    if !self.layer_entry(&mut written.layer, key_name, value, place)? {
                        let known = [TARGET_ONLY_KEYS, LAYER_KEYS].concat();
                        return Err(self.unknown_key(key, place, &known, NESTED_KEYS));
                    }
                }
            }
        }
        Ok(written)
    }

    /// A password needs a user name (MQTT 3.1.1 sends none without one); an
    /// inline one is warned about.
    fn check_password(
        &mut self,
        username: &Option<String>,
        password: &Option<(PasswordSource, Span)>,
        place: &Place,
    ) -> Result<(), ConfigError> {
        let Some((source, key_span)) = password else {
            return Ok(());
        };
        if username.is_none() {
            let problem = Problem::Unpaired {
                present: source.key(),
                missing: "username",
                place: place.phrase(),
                advice: "MQTT sends a password only with a user name",
            };
            return Err(self.error(key_span, problem));
        }
        if let PasswordSource::Inline(_) = source {
            let message = format!(
                "inline `password` {}: put it in a file readable only by mqtt-pulse and set `password_file`",
                place.phrase()
            );
            self.warn(key_span, message);
        }
        Ok(())
    }

    /// The target's client id — `client_id`, or derived from the name — unique
    /// among the targets: a broker disconnects the older of two connections
    /// with one id.
    fn unique_client_id(
        &self,
        name: &Spanned<String>,
        written: Option<Spanned<ClientId>>,
        place: &Place,
        seen: &mut Seen,
    ) -> Result<ClientId, ConfigError> {
        let (client_id, span, derived) = match written {
            Some(id) => (id.get_ref().clone(), id.span(), false),
            None => {
                let id = format!("{CLIENT_ID_PREFIX}{}", name.get_ref());
                if let Some(reason) = client_id_length_problem(&id) {
                    let reason = format!("the client id derived from it {reason}; set `client_id`");
                    return Err(self.bad_value("name", place, &name.span(), reason));
                }
                (ClientId::from(id), name.span(), true)
            }
        };
        if let Some((other, other_line, other_derived)) = seen.client_ids.get(&client_id) {
            let problem = Problem::DuplicateClientId {
                client_id: client_id.to_string(),
                place: place.phrase(),
                derived,
                other: other.clone(),
                other_line: *other_line,
                other_derived: *other_derived,
            };
            return Err(self.error(&span, problem));
        }
        let line = self.location(&span).line;
        let first = (name.get_ref().clone(), line, derived);
        seen.client_ids.insert(client_id.clone(), first);
        Ok(client_id)
    }

    /// A broker URL: one of the four schemes, a host, no credentials. The URL
    /// itself is never quoted back: it could hold a password.
    fn url(&self, text: &str, place: &Place, span: &Span) -> Result<Url, ConfigError> {
        let bad = |reason: String| self.bad_value("url", place, span, reason);
        if !text.contains("://") {
            return Err(bad(
                "must start with mqtt://, mqtts://, ws:// or wss://, like \"mqtt://broker.example:1883\""
                    .to_owned(),
            ));
        }
        let url = Url::parse(text).map_err(|error| {
            bad(format!(
                "not a URL ({error}); write it like \"mqtt://broker.example:1883\""
            ))
        })?;
        if !matches!(url.scheme(), "mqtt" | "mqtts" | "ws" | "wss") {
            return Err(bad(format!(
                "unsupported scheme {:?}; use mqtt://, mqtts://, ws:// or wss://",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "must not contain a user name or password; set `username` and `password_file`"
                    .to_owned(),
            ));
        }
        // The builder's own checks (a host, among others) decide what it accepts.
        ConnectionOptions::new("mqtt-pulse", url.as_str())
            .map_err(|error| bad(error.to_string()))?;
        Ok(url)
    }

    /// The TLS options of a target: its own `tls` over `[defaults.tls]`, for
    /// `mqtts://` and `wss://` only.
    fn merged_tls(
        &self,
        url: &Url,
        own: Option<&TlsLayer>,
        defaults: Option<&TlsLayer>,
        place: &Place,
    ) -> Result<TlsOptions, ConfigError> {
        if !matches!(url.scheme(), "mqtts" | "wss") {
            return match own {
                Some(tls) => {
                    let problem = Problem::TlsOnPlainUrl {
                        place: place.phrase(),
                        scheme: url.scheme().to_owned(),
                    };
                    Err(self.error(&tls.span, problem))
                }
                // `[defaults.tls]` is for the targets that use TLS.
                None => Ok(TlsOptions::default()),
            };
        }
        Ok(TlsOptions {
            ca_file: pick(own, defaults, |tls| tls.ca_file.clone()),
            // The certificate and its key belong together: never one from each table.
            client_auth: pick(own, defaults, |tls| tls.client_auth.clone()),
            insecure_skip_verify: pick(own, defaults, |tls| tls.insecure_skip_verify)
                .unwrap_or(false),
        })
    }

    fn otlp(&mut self, value: &Value<'_>) -> Result<OtlpConfig, ConfigError> {
        let place = Place::Table("[otlp]".to_owned());
        let table = self.table("otlp", &Place::Top, value)?;
        let mut otlp = OtlpConfig {
            endpoint: None,
            protocol: OtlpProtocol::default(),
            interval: None,
            timeout: None,
            headers: BTreeMap::new(),
        };
        for (key, value) in in_file_order(table) {
            match key.get_ref().as_ref() {
                "endpoint" => {
                    let text = self.string("endpoint", &place, value)?;
                    otlp.endpoint = Some(self.endpoint(text, &place, &value.span())?);
                }
                "protocol" => {
                    otlp.protocol = match self.string("protocol", &place, value)? {
                        "grpc" => OtlpProtocol::Grpc,
                        "http/protobuf" => OtlpProtocol::HttpProtobuf,
                        other => {
                            let reason =
                                format!("must be \"grpc\" or \"http/protobuf\", not {other:?}");
                            return Err(self.bad_value("protocol", &place, &value.span(), reason));
                        }
                    }
                }
                "interval" => {
                    otlp.interval = Some(self.positive_duration("interval", &place, value)?)
                }
                "timeout" => otlp.timeout = Some(self.positive_duration("timeout", &place, value)?),
                "headers" => otlp.headers = self.headers(value, &place)?,
                _ => return Err(self.unknown_key(key, &place, OTLP_KEYS, &[])),
            }
        }
        Ok(otlp)
    }

    fn endpoint(&self, text: &str, place: &Place, span: &Span) -> Result<Url, ConfigError> {
        let bad = |reason: String| self.bad_value("endpoint", place, span, reason);
        let url = Url::parse(text).map_err(|error| {
            bad(format!(
                "not a URL ({error}); write it like \"http://127.0.0.1:4317\""
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!(
                "unsupported scheme {:?}; use http:// or https://",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("the URL has no host".to_owned()));
        }
        Ok(url)
    }

    /// OTLP headers: HTTP header names, visible-ASCII values. The values are
    /// often credentials and are never quoted back.
    fn headers(
        &self,
        value: &Value<'_>,
        place: &Place,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let inner = place.nested("headers");
        let mut headers = BTreeMap::new();
        let mut lowercase_names = HashMap::new();
        for (key, value) in in_file_order(self.table("headers", place, value)?) {
            let name = key.get_ref().as_ref();
            let is_token_char =
                |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || !name.chars().all(is_token_char) {
                let reason = "a header name is letters, digits and !#$%&'*+-.^_`|~ only".to_owned();
                return Err(self.bad_value(name, &inner, &key.span(), reason));
            }
            if let Some(first) = lowercase_names.insert(name.to_ascii_lowercase(), name) {
                let reason = format!("repeats the header `{first}` (header names ignore case)");
                return Err(self.bad_value(name, &inner, &key.span(), reason));
            }
            let text = self.string(name, &inner, value)?;
            if !text.chars().all(|c| c == '\t' || (' '..='~').contains(&c)) {
                let reason = "a header value is visible ASCII, spaces and tabs only".to_owned();
                return Err(self.bad_value(name, &inner, &value.span(), reason));
            }
            headers.insert(name.to_owned(), text.to_owned());
        }
        Ok(headers)
    }
}

/// A TLS setting from the target's own table, else from `[defaults.tls]`.
fn pick<T>(
    own: Option<&TlsLayer>,
    defaults: Option<&TlsLayer>,
    get: impl Fn(&TlsLayer) -> Option<T>,
) -> Option<T> {
    own.and_then(&get).or_else(|| defaults.and_then(&get))
}

/// A table's entries in the order they are written, so the first problem in
/// the file is the one reported.
fn in_file_order<'a, 'i>(table: &'a DeTable<'i>) -> Vec<(&'a Key<'i>, &'a Value<'i>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// A key as messages show it: bare if it is a plain key, quoted and escaped
/// otherwise, so a message stays one line.
fn key_text(key: &str) -> String {
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

/// The key among `known` (or `table.key` among `nested`) that `key` most
/// likely meant.
fn suggest(key: &str, known: &[&str], nested: &[(&str, &[&str])]) -> Option<String> {
    let normalized = key.to_ascii_lowercase().replace('-', "_");
    if let Some(exact) = known.iter().find(|candidate| **candidate == normalized) {
        return Some((*exact).to_owned());
    }
    for (table, keys) in nested {
        if keys.contains(&normalized.as_str()) {
            return Some(format!("{table}.{normalized}"));
        }
    }
    known
        .iter()
        .map(|candidate| (strsim::jaro_winkler(&normalized, candidate), *candidate))
        .filter(|(similarity, _)| *similarity >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate.to_owned())
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

/// Why `text` cannot be a name or client id, if it cannot.
fn text_problem(text: &str) -> Option<String> {
    if text.is_empty() {
        Some("must not be empty".to_owned())
    } else if text.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else {
        None
    }
}

/// Why `id` is too long for a client id: MQTT's limit, and the label's.
fn client_id_length_problem(id: &str) -> Option<String> {
    (id.len() > crate::exporter::MAX_LABEL_VALUE_LENGTH).then(|| {
        format!(
            "must be at most {} bytes long (it is the client_id label of every series)",
            crate::exporter::MAX_LABEL_VALUE_LENGTH
        )
    })
}

/// Why `name` cannot be a constant label, if it cannot: the exporters' rule.
fn label_name_problem(name: &str) -> Option<&'static str> {
    crate::exporter::label_name_problem(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_a_close_key() {
        let known = [TARGET_ONLY_KEYS, LAYER_KEYS].concat();
        assert_eq!(
            suggest("keep_alvie", &known, NESTED_KEYS).as_deref(),
            Some("keep_alive")
        );
        assert_eq!(
            suggest("Keep-Alive", &known, NESTED_KEYS).as_deref(),
            Some("keep_alive")
        );
        assert_eq!(
            suggest("pasword_file", &known, NESTED_KEYS).as_deref(),
            Some("password_file")
        );
    }

    #[test]
    fn suggests_the_dotted_key_of_a_sub_table() {
        let known = [TARGET_ONLY_KEYS, LAYER_KEYS].concat();
        assert_eq!(
            suggest("ca_file", &known, NESTED_KEYS).as_deref(),
            Some("tls.ca_file")
        );
        assert_eq!(
            suggest("initial", &known, NESTED_KEYS).as_deref(),
            Some("backoff.initial")
        );
    }

    #[test]
    fn suggests_nothing_for_an_unrelated_key() {
        assert_eq!(suggest("colour", LAYER_KEYS, NESTED_KEYS), None);
    }

    #[test]
    fn label_names_follow_prometheus_and_avoid_ours() {
        for good in ["site", "_x", "Site_2"] {
            assert_eq!(label_name_problem(good), None, "{good}");
        }
        for bad in ["", "2site", "si-te", "sité", "__meta", "client_id", "type"] {
            assert!(label_name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn odd_keys_are_quoted_and_escaped() {
        assert_eq!(key_text("keep_alive"), "keep_alive");
        assert_eq!(key_text("a b"), "\"a b\"");
        assert_eq!(key_text("a\nb"), "\"a\\nb\"");
        assert_eq!(key_text(""), "\"\"");
    }
}
