//! The daemon's config file: TOML read into validated targets (each ready as
//! [`ConnectionOptions`]) and optional OTLP settings.
//!
//! This module owns the file format — its keys are a public contract, shown in
//! full in `mqtt-pulse.example.toml` — and its error messages. It never
//! connects to anything and never reads a secret: password files are checked to
//! be readable, not read. It must never panic on any input, and never put a
//! password or an OTLP header value into an error, a warning or `Debug` output.
//!
//! # The file
//!
//! * `[defaults]` — `keep_alive`, `connect_timeout`, `ping_timeout`,
//!   `backoff = { initial, max }`, `clean_session`, `labels` and `tls`, applied
//!   to every target that does not set them. `labels` merge key by key (the
//!   target's value wins); `backoff` merges key by key; `[defaults.tls]` applies
//!   only to `mqtts://` and `wss://` targets, key by key, except that
//!   `cert_file` and `key_file` are taken as a pair from the target if it sets
//!   either.
//! * `[[target]]` — `name` (required, unique), `url` (required; `mqtt://`,
//!   `mqtts://`, `ws://` or `wss://`, without credentials), `client_id`
//!   (defaults to `mqtt-pulse-<name>`, unique), `username`, `password_file` or
//!   inline `password` (warned about), the keys of `[defaults]`, and
//!   `[target.tls]` with `ca_file`, `cert_file`, `key_file`,
//!   `insecure_skip_verify`.
//! * `[otlp]` — `endpoint`, `protocol` (`"grpc"` or `"http/protobuf"`),
//!   `interval`, `timeout`, `headers`. OTLP is off unless the table is present.
//!
//! Durations are strings such as `"5s"` or `"250ms"`; `keep_alive` is whole
//! seconds from 1 s to 65,535 s. Relative file paths are relative to the
//! directory of the config file. Every table rejects keys it does not know.
//!
//! # Errors
//!
//! Loading stops at the first problem and reports it as one line:
//! `<path>:<line>:<column>: <problem>` (see [`ConfigError`]), for example
//!
//! ```text
//! mqtt-pulse.toml:7:1: unknown key `keep_alvie` in [[target]] "plant-a"; did you mean `keep_alive`?
//! ```
//!
//! Without a config file the daemon monitors [`Config::default_local`].

mod error;
mod parse;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::connection::{Backoff, ConnectionOptions, TlsOptions};
use crate::events::ClientId;
use crate::exporter::otlp::OtlpProtocol;

pub use error::{ConfigError, Location, Problem};

/// The most targets one file may have: one process monitors at most this many
/// connections (measured in BENCHMARKS.md, "Connection scale"); more is a
/// mistake or a job for several instances.
pub const MAX_TARGETS: usize = 10_000;

/// The keep-alive of a target that sets none.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// The connect timeout of a target that sets none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The URL monitored when there is no config file.
pub const DEFAULT_URL: &str = "mqtt://127.0.0.1:1883";
/// The name of the target monitored when there is no config file.
pub const DEFAULT_TARGET_NAME: &str = "local";
/// What a target's client id starts with when the config does not set one.
pub const CLIENT_ID_PREFIX: &str = "mqtt-pulse-";

/// A loaded, validated config: the targets to monitor and the OTLP settings.
///
/// ```
/// use std::path::Path;
/// use std::time::Duration;
/// use mqtt_pulse::config::Config;
///
/// let text = r#"
/// [defaults]
/// keep_alive = "2s"
/// labels = { site = "north" }
///
/// [[target]]
/// name = "plant-a"
/// url = "mqtt://broker.example:1883"
/// "#;
/// let config = Config::parse(text, Path::new("mqtt-pulse.toml"))?;
/// let target = &config.targets()[0];
/// assert_eq!(target.client_id().as_str(), "mqtt-pulse-plant-a");
/// assert_eq!(target.keep_alive(), Duration::from_secs(2));
/// assert_eq!(target.labels()["site"], "north");
/// assert_eq!(target.connection_options().broker(), "broker.example:1883");
///
/// let error = Config::parse("[[target]]\nname = 5\n", Path::new("bad.toml")).unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "bad.toml:2:8: wrong type for `name` in [[target]] #1: expected a string, found an integer"
/// );
/// # Ok::<(), mqtt_pulse::config::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    origin: Option<PathBuf>,
    targets: Vec<TargetConfig>,
    otlp: Option<OtlpConfig>,
    warnings: Vec<String>,
}

impl Config {
    /// Reads and validates the config file at `path`. Relative file paths in
    /// it are taken relative to `path`'s directory; the files they name must be
    /// readable now.
    ///
    /// # Errors
    /// [`ConfigError::Read`] if the file cannot be read, [`ConfigError::Invalid`]
    /// naming the first problem in it otherwise.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        match std::str::from_utf8(&bytes) {
            Ok(text) => Config::parse(text, path),
            Err(error) => {
                let valid = String::from_utf8_lossy(&bytes[..error.valid_up_to()]);
                Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    location: Some(Location::of(&valid, valid.len())),
                    problem: Box::new(Problem::NotUtf8),
                })
            }
        }
    }

    /// [`Config::load`] for a path given on the command line, or
    /// [`Config::default_local`] when there is none.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn load_or_default(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(path) => Config::load(path),
            None => Ok(Config::default_local()),
        }
    }

    /// Validates `text` as if read from the file `origin`: errors name
    /// `origin`, and relative file paths are taken relative to its directory.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first problem.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let parsed = parse::document(text, origin)?;
        Ok(Config {
            origin: Some(origin.to_owned()),
            targets: parsed.targets,
            otlp: parsed.otlp,
            warnings: parsed.warnings,
        })
    }

    /// The config without a file: one target named `local` monitoring
    /// `mqtt://127.0.0.1:1883` with client id `mqtt-pulse-local` and every
    /// default; no OTLP.
    pub fn default_local() -> Config {
        let text = format!("[[target]]\nname = {DEFAULT_TARGET_NAME:?}\nurl = {DEFAULT_URL:?}\n");
        let parsed = parse::document(&text, Path::new("<built-in>"))
            // Built from constants only; a unit test loads it.
            .expect("the built-in default config is valid");
        Config {
            origin: None,
            targets: parsed.targets,
            otlp: None,
            warnings: Vec::new(),
        }
    }

    /// The file this config came from; `None` for [`Config::default_local`].
    pub fn origin(&self) -> Option<&Path> {
        self.origin.as_deref()
    }

    /// The targets, in file order. Never empty.
    pub fn targets(&self) -> &[TargetConfig] {
        &self.targets
    }

    /// The target called `name`.
    pub fn target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|target| target.name() == name)
    }

    /// The OTLP settings; `None` (OTLP off) unless the file has an `[otlp]` table.
    pub fn otlp(&self) -> Option<&OtlpConfig> {
        self.otlp.as_ref()
    }

    /// Things that work but should be changed (an inline password, TLS
    /// verification turned off), one line each in the format of the errors,
    /// for the daemon to log. They never contain a secret.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// One monitored connection, with `[defaults]` applied.
///
/// Two targets are equal when every setting is, so a reload can tell which
/// targets changed (see [`diff`]). A password file is compared by its path, not
/// its contents.
#[derive(Clone)]
pub struct TargetConfig {
    settings: TargetSettings,
    line: usize,
    options: ConnectionOptions,
}

/// Every setting of a target, as compared on reload.
#[derive(Clone, PartialEq, Eq)]
struct TargetSettings {
    name: String,
    url: Url,
    client_id: ClientId,
    username: Option<String>,
    password: Option<PasswordSource>,
    keep_alive: Duration,
    connect_timeout: Duration,
    ping_timeout: Option<Duration>,
    backoff: Backoff,
    clean_session: bool,
    labels: BTreeMap<String, String>,
    tls: TlsOptions,
}

/// Where a target's password comes from. `Debug` never shows an inline one.
#[derive(Clone, PartialEq, Eq)]
enum PasswordSource {
    Inline(String),
    File(PathBuf),
}

impl PasswordSource {
    /// The config key it is written with.
    fn key(&self) -> &'static str {
        match self {
            PasswordSource::Inline(_) => "password",
            PasswordSource::File(_) => "password_file",
        }
    }
}

impl fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            PasswordSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl TargetSettings {
    /// Every setting handed to the connection builder, so nothing is left at
    /// the builder's own defaults by accident.
    fn connection_options(&self) -> Result<ConnectionOptions, crate::connection::OptionsError> {
        let mut options = ConnectionOptions::new(self.client_id.clone(), self.url.as_str())?
            .with_keep_alive(self.keep_alive)
            .with_connect_timeout(self.connect_timeout)
            .with_backoff(self.backoff)
            .with_clean_session(self.clean_session)
            .with_tls(self.tls.clone())
            .with_labels(self.labels.clone());
        if let Some(timeout) = self.ping_timeout {
            options = options.with_ping_timeout(timeout);
        }
        if let Some(username) = &self.username {
            options = match &self.password {
                Some(PasswordSource::Inline(password)) => {
                    options.with_credentials(username, password)
                }
                Some(PasswordSource::File(path)) => options.with_password_file(username, path),
                None => options.with_credentials(username, ""),
            };
        }
        Ok(options)
    }
}

impl TargetConfig {
    /// The target's name: its identity in the config and in logs.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The line of its `[[target]]` header in the config file.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The broker URL.
    pub fn url(&self) -> &Url {
        &self.settings.url
    }

    /// The broker as `host:port`: the `broker` label of its metrics.
    pub fn broker(&self) -> String {
        self.options.broker()
    }

    /// The MQTT client id: `client_id`, or `mqtt-pulse-<name>`.
    pub fn client_id(&self) -> &ClientId {
        &self.settings.client_id
    }

    /// The user name sent in CONNECT, if any.
    pub fn username(&self) -> Option<&str> {
        self.settings.username.as_deref()
    }

    /// The file the password is read from when connecting, if set.
    pub fn password_file(&self) -> Option<&Path> {
        match &self.settings.password {
            Some(PasswordSource::File(path)) => Some(path),
            _ => None,
        }
    }

    /// Whether the password is written in the config file itself.
    pub fn has_inline_password(&self) -> bool {
        matches!(self.settings.password, Some(PasswordSource::Inline(_)))
    }

    /// How often the connection pings the broker. Defaults to 5 s.
    pub fn keep_alive(&self) -> Duration {
        self.settings.keep_alive
    }

    /// How long connecting may take. Defaults to 5 s.
    pub fn connect_timeout(&self) -> Duration {
        self.settings.connect_timeout
    }

    /// How long a PINGREQ may go unanswered. Defaults to half the keep-alive.
    pub fn ping_timeout(&self) -> Duration {
        self.settings
            .ping_timeout
            .unwrap_or(self.settings.keep_alive / 2)
    }

    /// The reconnect backoff. Defaults to 100 ms doubling up to 30 s.
    pub fn backoff(&self) -> Backoff {
        self.settings.backoff
    }

    /// The CONNECT clean-session flag. Defaults to `true`.
    pub fn clean_session(&self) -> bool {
        self.settings.clean_session
    }

    /// The extra constant labels of its metrics, defaults merged in.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.settings.labels
    }

    /// The TLS settings (meaningful for `mqtts://` and `wss://` only).
    pub fn tls(&self) -> &TlsOptions {
        &self.settings.tls
    }

    /// The options to start its connection with.
    ///
    /// Infallible: they were built, and every file they name checked, when the
    /// config was loaded. A file can still vanish later; starting the
    /// connection reports that.
    pub fn connection_options(&self) -> ConnectionOptions {
        self.options.clone()
    }
}

impl PartialEq for TargetConfig {
    fn eq(&self, other: &Self) -> bool {
        // The line moves when unrelated targets are edited, and the options are
        // built from the settings: neither is compared.
        self.settings == other.settings
    }
}

impl Eq for TargetConfig {}

impl fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &self.settings;
        f.debug_struct("TargetConfig")
            .field("name", &settings.name)
            .field("url", &settings.url.as_str())
            .field("client_id", &settings.client_id)
            .field("username", &settings.username)
            .field("password", &settings.password)
            .field("keep_alive", &settings.keep_alive)
            .field("connect_timeout", &settings.connect_timeout)
            .field("ping_timeout", &self.ping_timeout())
            .field("backoff", &settings.backoff)
            .field("clean_session", &settings.clean_session)
            .field("labels", &settings.labels)
            .field("tls", &settings.tls)
            .finish()
    }
}

/// The `[otlp]` table: where and how to push metrics over OTLP.
///
/// `None` fields leave the choice to the OpenTelemetry SDK, which reads the
/// `OTEL_EXPORTER_OTLP_*` and `OTEL_METRIC_EXPORT_*` environment variables.
/// `Debug` shows header names only: values are often credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    endpoint: Option<Url>,
    protocol: OtlpProtocol,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    headers: BTreeMap<String, String>,
}

impl OtlpConfig {
    /// The collector's URL (`http://` or `https://`), as written.
    pub fn endpoint(&self) -> Option<&Url> {
        self.endpoint.as_ref()
    }

    /// The transport. Defaults to gRPC.
    pub fn protocol(&self) -> OtlpProtocol {
        self.protocol
    }

    /// How often metrics are pushed.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// How long one push may take.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Extra request headers (gRPC metadata), such as an API key.
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }
}

impl fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpConfig")
            .field("endpoint", &self.endpoint.as_ref().map(Url::as_str))
            .field("protocol", &self.protocol)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// How the targets of a reloaded config differ from the running ones, matched
/// by name.
///
/// To apply it without two connections sharing a client id, stop `removed` and
/// the old `changed` targets before starting `added` and the new `changed` ones.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TargetDiff<'a> {
    /// Targets only in the new config.
    pub added: Vec<&'a TargetConfig>,
    /// Targets only in the old config.
    pub removed: Vec<&'a TargetConfig>,
    /// Targets in both whose settings differ, as in the new config.
    pub changed: Vec<&'a TargetConfig>,
    /// Targets in both with the same settings, as in the new config.
    pub unchanged: Vec<&'a TargetConfig>,
}

/// Compares the targets of `old` and `new` by name.
///
/// ```
/// use std::path::Path;
/// use mqtt_pulse::config::{Config, diff};
///
/// let path = Path::new("mqtt-pulse.toml");
/// let old = Config::parse(r#"
/// [[target]]
/// name = "a"
/// url = "mqtt://a.example"
/// [[target]]
/// name = "b"
/// url = "mqtt://b.example"
/// "#, path)?;
/// let new = Config::parse(r#"
/// [[target]]
/// name = "b"
/// url = "mqtt://b.example"
/// keep_alive = "10s"
/// [[target]]
/// name = "c"
/// url = "mqtt://c.example"
/// "#, path)?;
/// let changes = diff(&old, &new);
/// let names = |targets: &[&mqtt_pulse::config::TargetConfig]| {
///     targets.iter().map(|t| t.name().to_owned()).collect::<Vec<_>>()
/// };
/// assert_eq!(names(&changes.added), ["c"]);
/// assert_eq!(names(&changes.removed), ["a"]);
/// assert_eq!(names(&changes.changed), ["b"]);
/// assert!(changes.unchanged.is_empty());
/// # Ok::<(), mqtt_pulse::config::ConfigError>(())
/// ```
pub fn diff<'a>(old: &'a Config, new: &'a Config) -> TargetDiff<'a> {
    let mut changes = TargetDiff::default();
    for target in new.targets() {
        match old.target(target.name()) {
            None => changes.added.push(target),
            Some(before) if before == target => changes.unchanged.push(target),
            Some(_) => changes.changed.push(target),
        }
    }
    changes.removed = old
        .targets()
        .iter()
        .filter(|target| new.target(target.name()).is_none())
        .collect();
    changes
}
