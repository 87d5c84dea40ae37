//! The daemon's config file: TOML read into validated targets (each ready as
//! [`ConnectionOptions`]) and optional OTLP settings.
//!
//! This module owns the file format — its keys are a public contract, shown in
//! full in `mqtt-pulse.example.toml` — and its error messages. It never
//! connects to anything and never reads a secret: password, CA, certificate
//! and key files are checked to be regular files of a sane size that can be
//! opened, not read (a FIFO, a directory or a device is an error at its
//! `file:line:col`); the connection reads them at every connect attempt. It must never panic on any input, and never put a
//! password or an OTLP header value into an error, a warning or `Debug` output.
//!
//! # The file
//!
//! * `[defaults]` — `keep_alive`, `connect_timeout`, `ping_timeout`,
//!   `backoff = { initial, max }`, `clean_session`, `protocol` (`"3.1.1"`, the
//!   default, or `"5"`), `labels` and `tls`, applied
//!   to every target that does not set them; and `connect_concurrency` (a
//!   whole number, 0 for unpaced), which only `[defaults]` has: the connect
//!   handshakes in flight at once to one broker, over all its targets
//!   ([`ConnectionOptions::with_connect_concurrency`]); `client_id`, a
//!   template that must hold `{name}`, for every target that sets none (the
//!   recipe for replicas and shards: `"mqtt-pulse-{hostname}-{name}"`); and `rtt_buckets`, the
//!   upper bounds in seconds of the classic round-trip histogram buckets
//!   (1 to 64, finite, positive, strictly increasing; default
//!   [`DEFAULT_RTT_BUCKETS`](crate::exporter::DEFAULT_RTT_BUCKETS)) and
//!   `rtt_native_schema`, the resolution of the native histograms a
//!   Prometheus asking for protobuf gets (−4 to 3; default: the coarsest no
//!   wider than `rtt_buckets`' narrowest step, 0 for the default layout); both
//!   read at start, a reload warns that a change waits for a restart. `labels` merge key by key (the
//!   target's value wins); `backoff` merges key by key; `[defaults.tls]` applies
//!   only to `mqtts://` and `wss://` targets, key by key, except that
//!   `cert_file` and `key_file` are taken as a pair from the target if it sets
//!   either.
//! * `[[target]]` — `name` (required, unique), `url` (required; `mqtt://`,
//!   `mqtts://`, `ws://` or `wss://`, without credentials), `client_id`
//!   (defaults to `mqtt-pulse-<name>`, unique; `{name}` and `{hostname}` in it
//!   stand for the target's name and the host's, `HOSTNAME` first — the
//!   recipe for replicas is `"mqtt-pulse-{hostname}-{name}"`), `username`, `password_file` or
//!   inline `password` (warned about), the keys of `[defaults]`, and
//!   `[target.tls]` with `ca_file`, `cert_file`, `key_file`,
//!   `insecure_skip_verify`.
//! * `[[path]]` — a broker-to-broker path: `from` and `to` (required: the
//!   names of two different targets; messages are published through `from`'s
//!   connection and received through `to`'s), `name` (defaults to
//!   `"<from>-><to>"`, unique), `topic` (defaults to
//!   `mqtt-pulse/path/{from}/{to}`, with the two client ids), `interval`
//!   (defaults to `from`'s keep-alive), `qos` (0, 1 or 2; defaults to 1) and
//!   `timeout` (defaults to the interval). See [`PathOptions`].
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
//!
//! # Layout
//!
//! * `document.rs` — the whole file: top-level keys, then each table.
//! * `reader.rs` — the spanned-tree reader (`TableReader`): one
//!   value of one type at a time, every problem placed at `file:line:col`.
//! * `keys.rs` — the keys each table knows and the did-you-mean suggestion.
//! * `layer.rs` — the keys `[defaults]` and `[[target]]` share (durations,
//!   backoff, labels, TLS) and how they merge.
//! * `target.rs` — `[[target]]` into a [`TargetConfig`]; names and client ids
//!   unique.
//! * `path.rs` — `[[path]]` into a [`PathConfig`]; ends that exist and
//!   differ, names unique.
//! * `otlp.rs` — `[otlp]` into an [`OtlpConfig`].
//! * `error.rs` — [`ConfigError`] and the wording of every [`Problem`].
//!
//! Connection settings, their defaults and their rules (keep-alive range,
//! label names) belong to [`ConnectionOptions`] and [`crate::connection`];
//! this module reads them from the file, places their errors, and never keeps
//! a second copy.
//!
//! # Two ways of reading config files, on purpose
//!
//! This file is read by a hand walk over a spanned TOML tree; the web config
//! (`--web.config.file`, YAML) by serde derive with a redacting `Secret` type.
//! Both are kept. The TOML file is mqtt-pulse's own contract: every rule has an
//! exact message (`tests/config/errors.rs` holds the table), messages name the
//! table a key is in (`in [[target]] "plant-a"`), suggest the key that was meant
//! (including `tls.ca_file` one table down), point at whichever of
//! `[defaults]` or the target set a bad value, warn with a location, and never
//! echo a value — serde's messages quote the value, which on a `password` line
//! is the secret, and put its own wording where ours is promised. The web
//! config is the Prometheus exporter-toolkit's format: its keys and checks
//! follow that Go library, `deny_unknown_fields` and serde-saphyr's
//! `line:col` give all it needs, and its secrets (bcrypt hashes, inline keys)
//! are typed `Secret` so no serde message can show them. The two share the
//! rules (one line, `file:line:col`, no secret echoed), not code: the parsers
//! differ (toml's `DeTable` against YAML), and moving either onto the other's
//! strategy would change messages users and tests rely on for no gain.

mod document;
mod error;
mod keys;
mod layer;
mod otlp;
mod path;
mod reader;
mod target;

use std::path::{Path, PathBuf};

use crate::connection::{ConnectionOptions, FileKind, PathOptions, read_regular_file};

pub use error::{ConfigError, Location, Problem};
pub use otlp::OtlpConfig;
pub(crate) use target::hostname;

/// The most targets one process watches: one connection each, measured in
/// BENCHMARKS.md ("Connection scale"). The daemon checks it on its share of
/// the file (`--shard.count`); more is a job for more replicas.
pub const MAX_TARGETS: usize = 10_000;

/// The most targets one file may have: ten processes' worth, for a file that
/// shards share ([`MAX_TARGETS`] each). Each replica parses the whole file.
pub const MAX_FILE_TARGETS: usize = 10 * MAX_TARGETS;

/// The most paths one file may have (each is two more subscriptions' worth
/// of traffic on connections that exist anyway).
pub const MAX_PATHS: usize = 10_000;

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
/// let options = target.options();
/// assert_eq!(options.client_id().as_str(), "mqtt-pulse-plant-a");
/// assert_eq!(options.keep_alive(), Duration::from_secs(2));
/// assert_eq!(options.labels()["site"], "north");
/// assert_eq!(options.broker(), "broker.example:1883");
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
    paths: Vec<PathConfig>,
    otlp: Option<OtlpConfig>,
    rtt_buckets: Option<Vec<f64>>,
    rtt_native_schema: Option<i32>,
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
        // A regular file of at most 16 MiB: a FIFO or /dev/zero is refused.
        let bytes =
            read_regular_file(path, FileKind::Config).map_err(|source| ConfigError::Read {
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
        let parsed = document::document(text, origin)?;
        Ok(Config {
            origin: Some(origin.to_owned()),
            targets: parsed.targets,
            paths: parsed.paths,
            otlp: parsed.otlp,
            rtt_buckets: parsed.rtt_buckets,
            rtt_native_schema: parsed.rtt_native_schema,
            warnings: parsed.warnings,
        })
    }

    /// The config without a file: one target named `local` monitoring
    /// `mqtt://127.0.0.1:1883` with client id `mqtt-pulse-local` and every
    /// default; no OTLP.
    pub fn default_local() -> Config {
        let text = format!("[[target]]\nname = {DEFAULT_TARGET_NAME:?}\nurl = {DEFAULT_URL:?}\n");
        let parsed = document::document(&text, Path::new("<built-in>"))
            // Built from constants only; a unit test loads it.
            .expect("the built-in default config is valid");
        Config {
            origin: None,
            targets: parsed.targets,
            paths: Vec::new(),
            otlp: None,
            rtt_buckets: None,
            rtt_native_schema: None,
            warnings: Vec::new(),
        }
    }

    /// The file this config came from; `None` for [`Config::default_local`].
    pub fn origin(&self) -> Option<&Path> {
        self.origin.as_deref()
    }

    /// The targets, in file order. Never empty in a config loaded or
    /// parsed; a share kept by [`retain_targets`](Self::retain_targets) may be.
    pub fn targets(&self) -> &[TargetConfig] {
        &self.targets
    }

    /// This config with only the targets `keep` says yes to (a shard's share
    /// of the file, say), in file order; the rest of it unchanged.
    /// A path is kept when both its ends are, and dropped otherwise.
    #[must_use]
    pub fn retain_targets(mut self, keep: impl Fn(&TargetConfig) -> bool) -> Config {
        self.targets.retain(|target| keep(target));
        let kept: std::collections::HashSet<&str> =
            self.targets.iter().map(TargetConfig::name).collect();
        let paths = std::mem::take(&mut self.paths);
        self.paths = paths
            .into_iter()
            .filter(|path| kept.contains(path.from()) && kept.contains(path.to()))
            .collect();
        self
    }

    /// Each target's group: targets joined by `[[path]]`s, directly or
    /// through others, form one group, named by its least target name; a
    /// target on no path is a group of its own. A shard owns whole groups,
    /// so both ends of every path run in one process.
    pub fn target_groups(&self) -> std::collections::HashMap<&str, &str> {
        // Union-find over the names, the least name as each root.
        let mut root: std::collections::HashMap<&str, &str> = self
            .targets
            .iter()
            .map(|target| (target.name(), target.name()))
            .collect();
        fn find<'a>(
            root: &mut std::collections::HashMap<&'a str, &'a str>,
            name: &'a str,
        ) -> &'a str {
            let mut at = name;
            while let Some(&up) = root.get(at) {
                if up == at {
                    break;
                }
                at = up;
            }
            root.insert(name, at);
            at
        }
        for path in &self.paths {
            let (a, b) = (find(&mut root, path.from()), find(&mut root, path.to()));
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            root.insert(high, low);
        }
        let names: Vec<&str> = self.targets.iter().map(TargetConfig::name).collect();
        names
            .into_iter()
            .map(|name| (name, find(&mut root, name)))
            .collect()
    }

    /// The target called `name`.
    pub fn target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|target| target.name() == name)
    }

    /// The broker-to-broker paths, in file order; often none.
    pub fn paths(&self) -> &[PathConfig] {
        &self.paths
    }

    /// The path called `name`.
    pub fn path(&self, name: &str) -> Option<&PathConfig> {
        self.paths.iter().find(|path| path.name() == name)
    }

    /// The OTLP settings; `None` (OTLP off) unless the file has an `[otlp]` table.
    pub fn otlp(&self) -> Option<&OtlpConfig> {
        self.otlp.as_ref()
    }

    /// `[defaults] rtt_buckets`: the upper bounds, in seconds, of the
    /// classic round-trip histogram buckets; `None` for the exporter's
    /// default ([`DEFAULT_RTT_BUCKETS`](crate::exporter::DEFAULT_RTT_BUCKETS)).
    /// Already checked by the exporter's rule.
    pub fn rtt_buckets(&self) -> Option<&[f64]> {
        self.rtt_buckets.as_deref()
    }

    /// `[defaults] rtt_native_schema`: the schema (−4 to 3) of the native
    /// histograms a Prometheus asking for protobuf gets; `None` for the
    /// exporter's default, derived from the classic buckets
    /// ([`MetricsBuilder::with_native_schema`](crate::exporter::metrics::MetricsBuilder::with_native_schema)).
    /// Already checked by the exporter's rule.
    pub fn rtt_native_schema(&self) -> Option<i32> {
        self.rtt_native_schema
    }

    /// Things that work but should be changed (an inline password, TLS
    /// verification turned off), one line each in the format of the errors,
    /// for the daemon to log. They never contain a secret.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// One monitored connection: its name, where it is written in the file, and
/// its [`ConnectionOptions`] with `[defaults]` applied.
///
/// Two targets are equal when their names and options are, wherever they are
/// written, so a reload can tell which targets changed (see [`diff`]). A
/// password file is compared by its path, not its contents.
#[derive(Clone, Debug)]
pub struct TargetConfig {
    name: String,
    location: Location,
    /// Whether its `client_id` holds `{hostname}`.
    client_id_per_host: bool,
    options: ConnectionOptions,
}

impl TargetConfig {
    /// The target's name: its identity in the config and in logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its `[[target]]` table starts in the config file.
    pub fn location(&self) -> Location {
        self.location
    }

    /// Whether its client id differs from host to host: its `client_id`
    /// holds `{hostname}`. Replicas of one config that may watch the same
    /// target at once (during a rollout or a change of `--shard.count`) need
    /// that, or the broker lets each take the other's session over.
    pub fn client_id_per_host(&self) -> bool {
        self.client_id_per_host
    }

    /// The options to start its connection with: every setting of the target,
    /// its client id (`client_id`, or `mqtt-pulse-<name>`) among them.
    ///
    /// Every file they name was checked when the config was loaded. A file can
    /// still vanish later; starting the connection reports that.
    pub fn options(&self) -> &ConnectionOptions {
        &self.options
    }
}

impl PartialEq for TargetConfig {
    fn eq(&self, other: &Self) -> bool {
        // The location moves when unrelated targets are edited: not compared.
        self.name == other.name && self.options == other.options
    }
}

impl Eq for TargetConfig {}

/// One broker-to-broker path: its name, where it is written, the names of
/// the target it publishes through (`from`) and of the one it receives
/// through (`to`), and its [`PathOptions`].
///
/// Two paths are equal when their names, ends and options are, wherever
/// they are written.
#[derive(Clone, Debug)]
pub struct PathConfig {
    name: String,
    location: Location,
    from: String,
    to: String,
    options: PathOptions,
}

impl PathConfig {
    /// The path's name: the `path` label of its series.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its `[[path]]` table starts in the config file.
    pub fn location(&self) -> Location {
        self.location
    }

    /// The name of the target whose connection publishes the messages.
    pub fn from(&self) -> &str {
        &self.from
    }

    /// The name of the target whose connection receives them.
    pub fn to(&self) -> &str {
        &self.to
    }

    /// Topic, interval, QoS and timeout.
    pub fn options(&self) -> &PathOptions {
        &self.options
    }
}

impl PartialEq for PathConfig {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.from == other.from
            && self.to == other.to
            && self.options == other.options
    }
}

impl Eq for PathConfig {}

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
            Some(before) if before.options() == target.options() => changes.unchanged.push(target),
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

/// How the paths of a reloaded config differ from the running ones, matched
/// by name. A path is *changed* when its settings differ, and also when it is
/// the same but one of its targets is changed (that target's connection is
/// replaced, and the path with it): restart it after its targets.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PathDiff<'a> {
    /// Paths only in the new config.
    pub added: Vec<&'a PathConfig>,
    /// Paths only in the old config.
    pub removed: Vec<&'a PathConfig>,
    /// Paths in both whose settings or targets changed, as in the new config.
    pub changed: Vec<&'a PathConfig>,
    /// Paths in both, unchanged with their targets, as in the new config.
    pub unchanged: Vec<&'a PathConfig>,
}

/// Compares the paths of `old` and `new` by name; see [`PathDiff`].
///
/// ```
/// use std::path::Path;
/// use mqtt_pulse::config::{Config, diff_paths};
///
/// let file = Path::new("mqtt-pulse.toml");
/// let targets = "[[target]]\nname = \"a\"\nurl = \"mqtt://a.example\"\n\
///                [[target]]\nname = \"b\"\nurl = \"mqtt://b.example\"\n";
/// let old = Config::parse(&format!("{targets}[[path]]\nfrom = \"a\"\nto = \"b\"\n"), file)?;
/// let new = Config::parse(&format!("{targets}[[path]]\nfrom = \"b\"\nto = \"a\"\n"), file)?;
/// let changes = diff_paths(&old, &new);
/// assert_eq!(changes.added[0].name(), "b->a");
/// assert_eq!(changes.removed[0].name(), "a->b");
/// # Ok::<(), mqtt_pulse::config::ConfigError>(())
/// ```
pub fn diff_paths<'a>(old: &'a Config, new: &'a Config) -> PathDiff<'a> {
    let target_changed = |name: &str| match (old.target(name), new.target(name)) {
        (Some(before), Some(after)) => before != after,
        _ => true,
    };
    let mut changes = PathDiff::default();
    for path in new.paths() {
        match old.path(path.name()) {
            None => changes.added.push(path),
            Some(before)
                if before == path && !target_changed(path.from()) && !target_changed(path.to()) =>
            {
                changes.unchanged.push(path)
            }
            Some(_) => changes.changed.push(path),
        }
    }
    changes.removed = old
        .paths()
        .iter()
        .filter(|path| new.path(path.name()).is_none())
        .collect();
    changes
}
