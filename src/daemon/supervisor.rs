//! The running targets and reloads of the config that names them.
//!
//! It owns the map from target name to running [`Connection`], the reload
//! procedure and the reload metrics. It must never leave a half-applied
//! config. A reload reads every file it needs exactly once — the config file,
//! the web config, and the password, CA, certificate and key files of every new
//! or changed target — off this task (it also handles signals) and within a
//! time limit, builds the whole new state from what it read, and only then
//! stops and starts anything. If anything fails, nothing stops.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use prometheus::{Gauge, IntGauge, Registry};
use tokio::task::JoinSet;

use super::DaemonError;
use crate::config::{Config, TargetConfig, diff};
use crate::connection::{Connection, ConnectionOptions, READ_TIMEOUT, Settings};
use crate::events::Events;
use crate::http::WebConfig;

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
    pub(super) async fn start(
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
        supervisor.apply(config).await?;
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
        // 1. Read: the config file and the web config, off this task.
        let config_path = self.config_path.clone();
        let web_config_path = self.web_config.as_ref().map(|(path, _)| path.clone());
        let (config, web_config) = off_the_runtime(move || {
            let config = Config::load_or_default(config_path.as_deref())?;
            let web_config = web_config_path
                .map(|path| WebConfig::load(&path))
                .transpose()?;
            Ok((config, web_config))
        })
        .await?;
        if let (Some(newer), Some((_, serving))) = (&web_config, &self.web_config) {
            serving.check_update(newer)?;
        }
        // 2. Build: every new or changed target with its files read, once.
        let changes = diff(&self.config, &config);
        let prepared = prepare(changes.added.iter().chain(&changes.changed).copied()).await?;
        let mut summary = ReloadSummary {
            unchanged: changes.unchanged.len(),
            removed: names(&changes.removed),
            changed: names(&changes.changed),
            added: names(&changes.added),
            ..ReloadSummary::default()
        };
        let removed = summary.removed.iter().chain(&summary.changed);
        let removed: Vec<String> = removed.cloned().collect();
        // 3. Apply: nothing below reads a file or can fail on one.
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        if self.config.otlp() != config.otlp() {
            tracing::warn!(
                "the [otlp] table changed; OTLP export keeps its running settings until \
                 mqtt-pulse is restarted"
            );
        }
        // Stop before starting: a new target may take over a client id.
        for name in &removed {
            if let Some(connection) = self.running.remove(name) {
                connection.shutdown().await;
            }
        }
        self.start_prepared(prepared)?;
        self.config = config;
        if let (Some(newer), Some((_, serving))) = (web_config, &self.web_config) {
            serving.update(newer).await?;
            summary.web_config_reloaded = true;
        }
        Ok(summary)
    }

    /// Starts every target of the first config.
    async fn apply(&mut self, config: Config) -> Result<(), DaemonError> {
        let prepared = prepare(config.targets().iter()).await?;
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        self.start_prepared(prepared)?;
        self.config = config;
        self.reload_metrics.succeeded();
        Ok(())
    }

    /// Starts connections whose files are read already: fails only outside a
    /// runtime, which the daemon never is.
    fn start_prepared(&mut self, prepared: Vec<Prepared>) -> Result<(), DaemonError> {
        for Prepared {
            name,
            options,
            mqtt_options,
        } in prepared
        {
            let connection = Connection::start_prepared(options, mqtt_options, &self.events)
                .map_err(|source| DaemonError::Target {
                    target: name.clone(),
                    source,
                })?;
            self.running.insert(name, connection);
        }
        Ok(())
    }

    pub(super) async fn shutdown(self) {
        let mut stopping = JoinSet::new();
        for connection in self.running.into_values() {
            stopping.spawn(connection.shutdown());
        }
        while stopping.join_next().await.is_some() {}
    }
}

fn names(targets: &[&TargetConfig]) -> Vec<String> {
    targets
        .iter()
        .map(|target| target.name().to_owned())
        .collect()
}

/// A target ready to start: its options and the rumqttc options with its
/// files read.
struct Prepared {
    name: String,
    options: ConnectionOptions,
    mqtt_options: Settings,
}

/// Reads the files of `targets` (concurrently, each off the runtime within
/// [`READ_TIMEOUT`]) and checks what starting them would check, without
/// starting them. The error is that of the first failing target in file order.
async fn prepare<'a>(
    targets: impl Iterator<Item = &'a TargetConfig>,
) -> Result<Vec<Prepared>, DaemonError> {
    let mut reading = JoinSet::new();
    for (index, target) in targets.enumerate() {
        let name = target.name().to_owned();
        let options = target.options().clone();
        reading.spawn(async move {
            let read = options.prepare().await;
            (index, name, options, read)
        });
    }
    let mut prepared = Vec::with_capacity(reading.len());
    let mut first_error: Option<(usize, DaemonError)> = None;
    while let Some(joined) = reading.join_next().await {
        // A reading task only awaits what cannot panic; a cancelled one cannot
        // happen while the set is held.
        let Ok((index, name, options, read)) = joined else {
            continue;
        };
        match read {
            Ok(mqtt_options) => prepared.push((
                index,
                Prepared {
                    name,
                    options,
                    mqtt_options,
                },
            )),
            Err(source) => {
                if first_error.as_ref().is_none_or(|(first, _)| index < *first) {
                    let error = DaemonError::Target {
                        target: name,
                        source,
                    };
                    first_error = Some((index, error));
                }
            }
        }
    }
    if let Some((_, error)) = first_error {
        return Err(error);
    }
    prepared.sort_by_key(|(index, _)| *index);
    Ok(prepared.into_iter().map(|(_, target)| target).collect())
}

/// Checks what starting these targets would check, reading their files on a
/// thread of their own within [`READ_TIMEOUT`], without starting them: for
/// `--config.check`, which has no runtime.
pub(super) fn validate_targets<'a>(
    targets: impl Iterator<Item = &'a TargetConfig>,
) -> Result<(), DaemonError> {
    for target in targets {
        target
            .options()
            .prepare_blocking()
            .map_err(|source| DaemonError::Target {
                target: target.name().to_owned(),
                source,
            })?;
    }
    Ok(())
}

/// Runs `read` on a blocking thread within [`READ_TIMEOUT`]: the task that
/// reloads also handles signals and must never wait on a file.
pub(super) async fn off_the_runtime<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, DaemonError> + Send + 'static,
) -> Result<T, DaemonError> {
    match tokio::time::timeout(READ_TIMEOUT, tokio::task::spawn_blocking(read)).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) | Err(_) => Err(DaemonError::FilesTimedOut(READ_TIMEOUT)),
    }
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
