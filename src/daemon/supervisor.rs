//! The running targets and paths, and reloads of the config that names them.
//!
//! It owns the map from target name to running [`Connection`] and from path
//! name to running [`Path`] (which lives on two of those connections), the reload
//! procedure and the reload metrics. It must never leave a half-applied
//! config. A reload reads every file it needs exactly once — the config file,
//! the web config, and the password, CA, certificate and key files of every new
//! or changed target — off this task (it also handles signals) and within a
//! time limit, builds the whole new state from what it read, and only then
//! stops and starts anything. If anything fails, nothing stops.
//!
//! It runs only the targets its [`Shard`] owns: the config it keeps is that
//! share, so a reload compares shares, and a target that leaves the share (a
//! renamed one that another shard now owns) is stopped like a removed one.
//! `mqtt_pulse_targets{shard_index, shard_count}` says how many it runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use prometheus::{Gauge, IntGauge, Opts, Registry};
use tokio::task::JoinSet;

use super::DaemonError;
use super::readiness::Attempted;
use super::shard::Shard;
use crate::config::{Config, MAX_TARGETS, PathConfig, TargetConfig, diff, diff_paths};
use crate::connection::{Connection, ConnectionOptions, Path, READ_TIMEOUT, Settings};
use crate::events::Events;
use crate::http::WebConfig;

/// The running targets and the config they came from.
pub(super) struct Supervisor {
    events: Events,
    config_path: Option<PathBuf>,
    shard: Shard,
    /// This shard's share of the config file.
    config: Config,
    running: BTreeMap<String, Connection>,
    /// Running paths by name; each needs its two targets in `running`.
    paths: BTreeMap<String, Path>,
    reload_metrics: ReloadMetrics,
    targets: IntGauge,
    attempted: Attempted,
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
    paths_added: Vec<String>,
    paths_removed: Vec<String>,
    paths_changed: Vec<String>,
    web_config_reloaded: bool,
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "added {:?}, removed {:?}, changed {:?}, {} unchanged",
            self.added, self.removed, self.changed, self.unchanged
        )?;
        if !(self.paths_added.is_empty()
            && self.paths_removed.is_empty()
            && self.paths_changed.is_empty())
        {
            write!(
                f,
                "; paths added {:?}, removed {:?}, changed {:?}",
                self.paths_added, self.paths_removed, self.paths_changed
            )?;
        }
        if self.web_config_reloaded {
            f.write_str("; web config reloaded")?;
        }
        Ok(())
    }
}

impl Supervisor {
    /// Registers the reload metrics and `mqtt_pulse_targets` on `registry`
    /// and starts every target of the first `config` that `shard` owns.
    pub(super) async fn start(
        events: Events,
        registry: &Registry,
        config_path: Option<PathBuf>,
        web_config: Option<(PathBuf, crate::http::WebConfig)>,
        (config, shard): (Config, Shard),
    ) -> Result<Self, DaemonError> {
        let mut supervisor = Self {
            attempted: Attempted::new(&events),
            events,
            config_path,
            shard,
            config: Config::default_local(),
            running: BTreeMap::new(),
            paths: BTreeMap::new(),
            reload_metrics: ReloadMetrics::register(registry),
            targets: register_targets_gauge(registry, shard),
            web_config,
        };
        supervisor.apply(config).await?;
        Ok(supervisor)
    }

    /// How many targets are running.
    pub(super) fn running(&self) -> usize {
        self.running.len()
    }

    /// What `/-/ready` asks: has every running target been attempted once?
    pub(super) fn readiness(&self) -> crate::http::Readiness {
        let attempted = self.attempted.clone();
        crate::http::Readiness::new(move || attempted.check())
    }

    /// After a start or reload: the gauge and readiness follow the targets.
    fn running_changed(&mut self) {
        self.targets
            .set(i64::try_from(self.running.len()).unwrap_or(i64::MAX));
        let ids = self.running.values().map(|c| c.client_id().clone());
        self.attempted.expect(ids);
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
        let shard = self.shard;
        let config = share(config, shard)?;
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
        let path_changes = diff_paths(&self.config, &config);
        summary.paths_added = path_names(&path_changes.added);
        summary.paths_removed = path_names(&path_changes.removed);
        summary.paths_changed = path_names(&path_changes.changed);
        let paths_to_start: Vec<PathConfig> = path_changes
            .added
            .iter()
            .chain(&path_changes.changed)
            .map(|path| (*path).clone())
            .collect();
        // 3. Apply: nothing below reads a file or can fail on one.
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        warn_of_shared_client_ids(shard, &config);
        if self.config.rtt_buckets() != config.rtt_buckets()
            || self.config.rtt_native_schema() != config.rtt_native_schema()
        {
            tracing::warn!(
                "[defaults] rtt_buckets or rtt_native_schema changed; the histograms keep \
                 their running buckets until mqtt-pulse is restarted"
            );
        }
        if self.config.otlp() != config.otlp() {
            tracing::warn!(
                "the [otlp] table changed; OTLP export keeps its running settings until \
                 mqtt-pulse is restarted"
            );
        }
        // Paths first: a path lives on its targets' connections.
        for name in summary.paths_removed.iter().chain(&summary.paths_changed) {
            self.paths.remove(name);
        }
        // Stop before starting: a new target may take over a client id.
        for name in &removed {
            if let Some(connection) = self.running.remove(name) {
                connection.shutdown().await;
            }
        }
        self.start_prepared(prepared)?;
        self.start_paths(&paths_to_start)?;
        self.config = config;
        self.running_changed();
        if let (Some(newer), Some((_, serving))) = (web_config, &self.web_config) {
            serving.update(newer).await?;
            summary.web_config_reloaded = true;
        }
        Ok(summary)
    }

    /// Starts every target of the first config that the shard owns.
    async fn apply(&mut self, config: Config) -> Result<(), DaemonError> {
        let shard = self.shard;
        let config = share(config, shard)?;
        let prepared = prepare(config.targets().iter()).await?;
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        warn_of_shared_client_ids(shard, &config);
        self.start_prepared(prepared)?;
        self.start_paths(config.paths())?;
        self.config = config;
        self.running_changed();
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

    /// Starts paths whose targets run: fails only on what the config
    /// already checked (settings, two different targets that exist). A path
    /// one of whose targets this instance does not run (another instance
    /// owns it) is left out with a warning: it needs both connections.
    fn start_paths(&mut self, paths: &[PathConfig]) -> Result<(), DaemonError> {
        for path in paths {
            let (Some(from), Some(to)) =
                (self.running.get(path.from()), self.running.get(path.to()))
            else {
                tracing::warn!(
                    path = path.name(),
                    from = path.from(),
                    to = path.to(),
                    "path not started: this instance does not run both of its targets"
                );
                continue;
            };
            let running =
                Path::start(path.options().clone(), from, to, &self.events).map_err(|source| {
                    DaemonError::Path {
                        path: path.name().to_owned(),
                        source,
                    }
                })?;
            self.paths.insert(path.name().to_owned(), running);
        }
        Ok(())
    }

    pub(super) async fn shutdown(mut self) {
        // Paths first: they live on the connections.
        self.paths.clear();
        let mut stopping = JoinSet::new();
        for connection in self.running.into_values() {
            stopping.spawn(connection.shutdown());
        }
        while stopping.join_next().await.is_some() {}
    }
}

/// `shard`'s share of `config`: the targets it owns, at most
/// [`MAX_TARGETS`] of them, and the paths between them. Targets joined by
/// paths go together, to the owner of their group's least name
/// ([`Config::target_groups`]), so that a path's two ends run in one process.
pub(super) fn share(config: Config, shard: Shard) -> Result<Config, DaemonError> {
    let owned: std::collections::HashSet<String> = {
        let groups = config.target_groups();
        config
            .targets()
            .iter()
            .map(TargetConfig::name)
            .filter(|name| shard.owns(groups.get(name).copied().unwrap_or(name)))
            .map(str::to_owned)
            .collect()
    };
    let config = config.retain_targets(|target| owned.contains(target.name()));
    if config.targets().len() > MAX_TARGETS {
        return Err(DaemonError::TooManyTargets {
            file: config.origin().map_or_else(
                || "the built-in config".to_owned(),
                |path| path.display().to_string(),
            ),
            owned: config.targets().len(),
            shard,
            max: MAX_TARGETS,
        });
    }
    Ok(config)
}

/// When sharded, one `warn` line if some owned targets have a client id that
/// is the same in every replica. A change of `--shard.count` rolls out with
/// old and new replicas running at once, both owning the targets that move;
/// with one client id the broker lets each take the other's session over.
fn warn_of_shared_client_ids(shard: Shard, share: &Config) {
    if let Some(warning) = shared_client_ids(shard, share) {
        tracing::warn!(
            shard_index = shard.index(),
            shard_count = shard.count(),
            "{warning}"
        );
    }
}

/// The warning of [`warn_of_shared_client_ids`], if there is one to give
/// (`--config.check` prints it too).
pub(super) fn shared_client_ids(shard: Shard, share: &Config) -> Option<String> {
    if shard.count() == 1 {
        return None;
    }
    let shared = share
        .targets()
        .iter()
        .filter(|target| !target.client_id_per_host())
        .count();
    (shared > 0).then(|| {
        format!(
            "{shared} of the {} targets this shard owns have a client id without {{hostname}}, \
             the same in every replica: while a change of --shard.count rolls out, an old and \
             a new replica own the targets that move, and the broker lets each take the \
             other's session over; set client_id = \"mqtt-pulse-{{hostname}}-{{name}}\" in \
             [defaults]",
            share.targets().len()
        )
    })
}

fn path_names(paths: &[&PathConfig]) -> Vec<String> {
    paths.iter().map(|path| path.name().to_owned()).collect()
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

/// `mqtt_pulse_targets{shard_index, shard_count}`: how many targets this
/// replica runs — its share of the config file's.
fn register_targets_gauge(registry: &Registry, shard: Shard) -> IntGauge {
    let opts = Opts::new(
        "mqtt_pulse_targets",
        "Targets of the config file this mqtt-pulse watches: its share when the targets \
         are sharded over --shard.count replicas, all of them otherwise.",
    )
    .const_label("shard_index", shard.index().to_string())
    .const_label("shard_count", shard.count().to_string());
    let gauge = IntGauge::with_opts(opts).expect("a valid metric name and labels");
    // A fresh registry holds nothing of that name, so registering cannot clash.
    let _ = registry.register(Box::new(gauge.clone()));
    gauge
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
