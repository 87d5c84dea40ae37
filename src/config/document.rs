//! The whole file: its top-level keys, then `[defaults]`, `[[target]]`,
//! `[[path]]` and `[otlp]` in turn, each read by its own module through a [`TableReader`].

use std::path::Path;

use super::error::ConfigError;
use super::keys::TOP_KEYS;
use super::layer::Defaults;
use super::reader::{Place, TableReader, in_file_order};
use super::{OtlpConfig, PathConfig, TargetConfig};

/// What a config file holds once every rule has passed.
pub(super) struct Parsed {
    pub(super) targets: Vec<TargetConfig>,
    pub(super) paths: Vec<PathConfig>,
    pub(super) otlp: Option<OtlpConfig>,
    pub(super) rtt_buckets: Option<Vec<f64>>,
    pub(super) rtt_native_schema: Option<i32>,
    pub(super) warnings: Vec<String>,
}

/// Validates the config `text` read from `origin`.
pub(super) fn document(text: &str, origin: &Path) -> Result<Parsed, ConfigError> {
    let mut reader = TableReader::new(text, origin);
    let root = reader.parse()?;
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
    let paths = reader.paths(root.get("path"), &targets)?;
    let otlp = root
        .get("otlp")
        .map(|value| reader.otlp(value))
        .transpose()?;
    Ok(Parsed {
        targets,
        paths,
        otlp,
        rtt_buckets: defaults.rtt_buckets,
        rtt_native_schema: defaults.rtt_native_schema,
        warnings: reader.into_warnings(),
    })
}
