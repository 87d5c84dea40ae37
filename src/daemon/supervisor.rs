//! The running targets and reloads of the config that names them.
//!
//! It owns the map from target name to running [`Connection`], the reload
//! procedure (read every file, validate, then apply) and the reload metrics.
//! It must never leave a half-applied config: a reload validates every new or
//! changed target before touching a running one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use prometheus::{Gauge, IntGauge, Registry};
use tokio::task::JoinSet;

use super::DaemonError;
use crate::config::{Config, TargetConfig, diff};
use crate::connection::Connection;
use crate::events::Events;

/// The running targets and the config they came from.
pub(super) struct Supervisor {
    events: Events,
    config_path: Option<PathBuf>,
    config: Config,
    running: BTreeMap<String, Connection>,
    reload_metrics: ReloadMetrics,
    /// `--web.config.file` and what every listener serves from it.
    web_config: Option<(PathBuf, crate::http::WebConfig)>,
}

/// What a reload did, by target name.
#[derive(Debug, Default)]
pub(super) struct ReloadSummary {
    pub(super) added: Vec<String>,
    removed: Vec<String>,
    changed: Vec<String>,
    unchanged: usize,
    web_config_reloaded: bool,
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "added {:?}, removed {:?}, changed {:?}, {} unchanged",
            self.added, self.removed, self.changed, self.unchanged
        )?;
        if self.web_config_reloaded {
            f.write_str("; web config reloaded")?;
        }
        Ok(())
    }
}

impl Supervisor {
    /// Registers the reload metrics on `registry` and starts every target of
    /// the first `config`.
    pub(super) fn start(
        events: Events,
        registry: &Registry,
        config_path: Option<PathBuf>,
        web_config: Option<(PathBuf, crate::http::WebConfig)>,
        config: Config,
    ) -> Result<Self, DaemonError> {
        let mut supervisor = Self {
            events,
            config_path,
            config: Config::default_local(),
            running: BTreeMap::new(),
            reload_metrics: ReloadMetrics::register(registry),
            web_config,
        };
        supervisor.apply(config)?;
        Ok(supervisor)
    }

    /// How many targets are running.
    pub(super) fn running(&self) -> usize {
        self.running.len()
    }

    /// Re-reads the config file and the web config file and applies them;
    /// on any error in either nothing changes.
    pub(super) async fn reload(&mut self) -> Result<ReloadSummary, String> {
        let outcome = self.reload_files().await;
        match &outcome {
            Ok(summary) => {
                self.reload_metrics.succeeded();
                tracing::info!(%summary, "config reloaded");
            }
            Err(error) => {
                self.reload_metrics.failed();
                tracing::error!(%error, "config reload failed; keeping the running config");
            }
        }
        outcome.map_err(|e| e.to_string())
    }

    async fn reload_files(&mut self) -> Result<ReloadSummary, DaemonError> {
        let config = Config::load_or_default(self.config_path.as_deref())?;
        let web_config = match &self.web_config {
            Some((path, serving)) => {
                let newer = crate::http::WebConfig::load(path)?;
                serving.check_update(&newer)?;
                Some(newer)
            }
            None => None,
        };
        let mut summary = self.apply_changes(config).await?;
        if let (Some(newer), Some((_, serving))) = (web_config, &self.web_config) {
            serving.update(newer).await?;
            summary.web_config_reloaded = true;
        }
        Ok(summary)
    }

    /// Starts every target of the first config.
    fn apply(&mut self, config: Config) -> Result<(), DaemonError> {
        validate_targets(config.targets().iter())?;
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        for target in config.targets() {
            start(&mut self.running, &self.events, target)?;
        }
        self.config = config;
        self.reload_metrics.succeeded();
        Ok(())
    }

    async fn apply_changes(&mut self, config: Config) -> Result<ReloadSummary, DaemonError> {
        let changes = diff(&self.config, &config);
        validate_targets(changes.added.iter().chain(&changes.changed).copied())?;
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        if self.config.otlp() != config.otlp() {
            tracing::warn!(
                "the [otlp] table changed; OTLP export keeps its running settings until \
                 mqtt-pulse is restarted"
            );
        }
        let mut summary = ReloadSummary {
            unchanged: changes.unchanged.len(),
            ..ReloadSummary::default()
        };
        // Stop before starting: a new target may take over a client id.
        let running = &mut self.running;
        for target in &changes.removed {
            stop(running, target.name()).await;
            summary.removed.push(target.name().to_owned());
        }
        for target in &changes.changed {
            stop(running, target.name()).await;
            start(running, &self.events, target)?;
            summary.changed.push(target.name().to_owned());
        }
        for target in &changes.added {
            start(running, &self.events, target)?;
            summary.added.push(target.name().to_owned());
        }
        self.config = config;
        Ok(summary)
    }

    pub(super) async fn shutdown(self) {
        let mut stopping = JoinSet::new();
        for connection in self.running.into_values() {
            stopping.spawn(connection.shutdown());
        }
        while stopping.join_next().await.is_some() {}
    }
}

fn start(
    running: &mut BTreeMap<String, Connection>,
    events: &Events,
    target: &TargetConfig,
) -> Result<(), DaemonError> {
    let options = target.options().clone();
    let connection = Connection::start(options, events).map_err(|source| DaemonError::Target {
        target: target.name().to_owned(),
        source,
    })?;
    running.insert(target.name().to_owned(), connection);
    Ok(())
}

async fn stop(running: &mut BTreeMap<String, Connection>, name: &str) {
    if let Some(connection) = running.remove(name) {
        connection.shutdown().await;
    }
}

/// Checks what starting these targets would check, without starting them.
pub(super) fn validate_targets<'a>(
    targets: impl Iterator<Item = &'a TargetConfig>,
) -> Result<(), DaemonError> {
    for target in targets {
        target
            .options()
            .to_mqtt_options()
            .map_err(|source| DaemonError::Target {
                target: target.name().to_owned(),
                source,
            })?;
    }
    Ok(())
}

/// `mqtt_pulse_config_last_reload_successful` and its timestamp, as
/// Prometheus itself exports them.
struct ReloadMetrics {
    successful: IntGauge,
    success_timestamp: Gauge,
}

impl ReloadMetrics {
    fn register(registry: &Registry) -> Self {
        let successful = IntGauge::new(
            "mqtt_pulse_config_last_reload_successful",
            "Whether the last configuration reload attempt was successful (1) or not (0).",
        )
        .expect("a valid metric name");
        let success_timestamp = Gauge::new(
            "mqtt_pulse_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load, in seconds.",
        )
        .expect("a valid metric name");
        // A fresh registry holds nothing yet, so registering cannot clash.
        let _ = registry.register(Box::new(successful.clone()));
        let _ = registry.register(Box::new(success_timestamp.clone()));
        Self {
            successful,
            success_timestamp,
        }
    }

    fn succeeded(&self) {
        self.successful.set(1);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.success_timestamp.set(now.as_secs_f64());
    }

    fn failed(&self) {
        self.successful.set(0);
    }
}
