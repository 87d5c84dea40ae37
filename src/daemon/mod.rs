//! The `mqtt-pulse` daemon: one [`Connection`] per configured target, the
//! Prometheus exporter, the HTTP server(s), reload and shutdown.
//!
//! It owns the process lifecycle — start everything or fail with one line,
//! reload on SIGHUP or `POST /-/reload` (an invalid file changes nothing), and
//! on SIGINT/SIGTERM stop serving, disconnect every target cleanly and return.
//! It must never leave a half-applied config: a reload validates every new or
//! changed target before touching a running one.

mod cli;
mod logging;

pub use cli::{Cli, Command, LONG_VERSION, LogFormat, LogLevel};
pub use logging::init_logging;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use prometheus::{Gauge, IntGauge, Registry};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::config::{Config, ConfigError, TargetConfig, diff};
use crate::connection::{Connection, OptionsError};
use crate::events::Events;
use crate::exporter::prometheus::{BuildError, PrometheusBuilder};

/// Why the daemon could not start or keep running. `Display` is the one line
/// the binary prints before exiting with status 1.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The config file cannot be read or is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A target's connection settings are unusable (e.g. a certificate file
    /// that holds no certificate).
    #[error("target {target:?}: {source}")]
    Target {
        /// The target's name.
        target: String,
        /// What is wrong.
        source: OptionsError,
    },
    /// A `--web.listen-address` is not `host:port` or `:port`.
    #[error("invalid --web.listen-address {address:?}: {reason}")]
    ListenAddress {
        /// The flag's value.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The flag's value.
        address: String,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The `--web.config.file` cannot be read or is invalid.
    #[error("{0}")]
    WebConfig(#[from] crate::http::WebConfigError),
    /// The exporter could not be registered.
    #[error("cannot set up the Prometheus exporter: {0}")]
    Exporter(#[from] BuildError),
    /// The OTLP exporter's settings (`[otlp]` or `OTEL_*`) are unusable.
    #[cfg(feature = "otlp")]
    #[error("cannot set up the OTLP exporter: {0}")]
    Otlp(#[from] crate::exporter::otlp::OtlpError),
    /// `healthcheck` found no healthy mqtt-pulse at the address.
    #[error("healthcheck of {address} failed: {reason}")]
    Unhealthy {
        /// Where it asked.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// The tokio runtime could not be started.
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
}

/// Runs the daemon as the binary does: `--config.check`, or start, serve until
/// SIGINT/SIGTERM, shut down. Builds its own multi-threaded runtime.
///
/// # Errors
/// [`DaemonError`] for anything that keeps the daemon from starting.
pub fn main(cli: Cli) -> Result<(), DaemonError> {
    return_freed_memory();
    if let Some(Command::Healthcheck) = cli.command {
        let address = cli.listen_addresses.first().map_or(":9883", String::as_str);
        let tls = match &cli.web_config_file {
            Some(path) => crate::http::WebConfig::load(path)?.is_tls(),
            None => false,
        };
        return healthcheck(address, tls);
    }
    if cli.config_check {
        return check_config(&cli);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    runtime.block_on(run(cli, crate::http::shutdown_signal()))
}

/// With jemalloc as the allocator (feature `jemalloc`, the binary's default),
/// starts its background purging: pages freed by a reconnect storm go back to
/// the OS about ten seconds later, even in a process that then sits quiet —
/// without it jemalloc purges only while it allocates. Does nothing without
/// the feature. [`main`] calls it; a benchmark that measures what the daemon
/// would use calls it too.
pub fn return_freed_memory() {
    #[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        // Memory is still returned, only later (on the next allocations).
        tracing::warn!(%error, "cannot start jemalloc's background purge thread");
    }
}

/// `GET /-/healthy` on the daemon listening at `address` (`:port` and
/// wildcard hosts mean this machine), over TLS if `tls`. A dozen lines of
/// HTTP/1.1 by hand keep an HTTP client library out of the binary for one
/// request to loopback.
fn healthcheck(address: &str, tls: bool) -> Result<(), DaemonError> {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;

    let unhealthy = |reason: String| DaemonError::Unhealthy {
        address: address.to_owned(),
        reason,
    };
    let target = match address.rsplit_once(':') {
        Some(("" | "0.0.0.0" | "[::]", port)) => format!("127.0.0.1:{port}"),
        _ => address.to_owned(),
    };
    let socket = target
        .to_socket_addrs()
        .map_err(|e| unhealthy(e.to_string()))?
        .next()
        .ok_or_else(|| unhealthy("the address resolves to nothing".into()))?;
    let timeout = Duration::from_secs(3);
    let tcp = TcpStream::connect_timeout(&socket, timeout).map_err(|e| unhealthy(e.to_string()))?;
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    let mut stream: Box<dyn ReadWrite> = if tls {
        // The server is this machine's own mqtt-pulse: which certificate it
        // shows is not the question, whether it answers is.
        let config = crate::connection::TlsOptions {
            insecure_skip_verify: true,
            ..Default::default()
        }
        .client_config()
        .map_err(|e| unhealthy(e.to_string()))?;
        let name = rustls::pki_types::ServerName::try_from("localhost")
            .map_err(|e| unhealthy(e.to_string()))?;
        let connection =
            rustls::ClientConnection::new(config, name).map_err(|e| unhealthy(e.to_string()))?;
        Box::new(rustls::StreamOwned::new(connection, tcp))
    } else {
        Box::new(tcp)
    };
    let request = format!("GET /-/healthy HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| unhealthy(e.to_string()))?;
    let mut response = Vec::new();
    // A TLS server may close without close_notify; what was read still counts.
    if let Err(error) = stream.read_to_end(&mut response)
        && response.is_empty()
    {
        return Err(unhealthy(error.to_string()));
    }
    let status_line = String::from_utf8_lossy(&response);
    let status_line = status_line.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(unhealthy(format!("answered {status_line:?}")))
    }
}

/// A byte stream, plain or TLS.
trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

fn check_config(cli: &Cli) -> Result<(), DaemonError> {
    let config = Config::load_or_default(cli.config_file.as_deref())?;
    // What starting would check too: certificate and key contents, the web config.
    validate_targets(config.targets().iter())?;
    if let Some(path) = &cli.web_config_file {
        crate::http::WebConfig::load(path)?;
    }
    for warning in config.warnings() {
        eprintln!("{warning}");
    }
    let names: Vec<&str> = config.targets().iter().map(|t| t.name()).collect();
    let origin = match cli.config_file.as_deref() {
        Some(path) => path.display().to_string(),
        None => "no config file (built-in default)".to_owned(),
    };
    println!(
        "{origin}: OK, {} target{} ({})",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    );
    Ok(())
}

/// Starts every target and the HTTP server(s), serves until `shutdown`
/// completes, then stops serving and disconnects every target cleanly.
///
/// # Errors
/// [`DaemonError`] if the config, a target, the exporter or a listen address
/// is unusable; nothing keeps running then.
pub async fn run(cli: Cli, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let web_config = match cli.web_config_file.as_deref() {
        Some(path) => crate::http::WebConfig::load(path)?,
        None => crate::http::WebConfig::default(),
    };
    // Take over SIGHUP, and let `shutdown` install its handlers (a signal
    // future does on its first poll), before anything can be asked to reload
    // or stop: until then those signals would kill the process outright.
    let mut hangups = hangup_signals();
    tokio::pin!(shutdown);
    tokio::select! {
        biased;
        () = &mut shutdown => return Ok(()),
        () = std::future::ready(()) => {}
    }
    let config = Config::load_or_default(cli.config_file.as_deref())?;
    let mut listeners = Vec::new();
    for address in &cli.listen_addresses {
        listeners.push((address.clone(), bind(address).await?));
    }

    let events = Events::new();
    let registry = Registry::new();
    let reload_metrics = ReloadMetrics::register(&registry);
    let handle = PrometheusBuilder::new(&events)
        .with_registry(registry.clone())
        .install()?;
    // Before the targets start, so their first status changes are counted.
    let otlp = start_otlp(&config, &events, &registry)?;
    let mut supervisor = Supervisor {
        events,
        config_path: cli.config_file.clone(),
        config: Config::default_local(),
        running: BTreeMap::new(),
        reload_metrics,
        web_config: cli
            .web_config_file
            .clone()
            .map(|path| (path, web_config.clone())),
    };
    supervisor.apply(config)?;

    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(8);
    let app = crate::http::router(handle).merge(reload_router(reload_tx));
    let (stop_serving, serving_stopped) = watch::channel(false);
    let mut servers = JoinSet::new();
    for (address, listener) in listeners {
        let mut stopped = serving_stopped.clone();
        let app = app.clone();
        let server = crate::http::Server::new().with_web_config(web_config.clone());
        servers.spawn(async move {
            let until = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            if let Err(error) = server.serve(listener, app, until).await {
                tracing::error!(%address, %error, "HTTP server failed");
            }
        });
    }
    tracing::info!(
        version = LONG_VERSION,
        targets = supervisor.running.len(),
        listen = ?cli.listen_addresses,
        config = ?cli.config_file,
        "mqtt-pulse started"
    );

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(request) = reload_rx.recv() => {
                let outcome = supervisor.reload().await;
                let _ = request.reply.send(outcome);
            }
            Some(()) = hangups.recv() => {
                let _ = supervisor.reload().await;
            }
        }
    }

    tracing::info!("shutting down");
    let _ = stop_serving.send(true);
    while servers.join_next().await.is_some() {}
    // The last push carries the targets as they were, not as the daemon's own
    // disconnects leave them.
    stop_otlp(otlp).await;
    supervisor.shutdown().await;
    Ok(())
}

/// The running OTLP exporter, if `[otlp]` or `OTEL_EXPORTER_OTLP_*` asks for one.
#[cfg(feature = "otlp")]
type Otlp = Option<crate::exporter::otlp::OtlpHandle>;
#[cfg(not(feature = "otlp"))]
type Otlp = Option<std::convert::Infallible>;

#[cfg(feature = "otlp")]
fn start_otlp(config: &Config, events: &Events, registry: &Registry) -> Result<Otlp, DaemonError> {
    use crate::exporter::otlp::{OtlpBuilder, configured_by_env};
    let builder = match config.otlp() {
        Some(otlp) => OtlpBuilder::new(events).with_config(otlp),
        None if configured_by_env() => OtlpBuilder::new(events),
        None => return Ok(None),
    };
    let handle = builder
        .with_prometheus_registry(registry.clone())
        .install()?;
    tracing::info!(
        protocol = ?handle.protocol(),
        endpoint = handle.endpoint(),
        interval = ?handle.interval(),
        "pushing metrics over OTLP"
    );
    Ok(Some(handle))
}

#[cfg(not(feature = "otlp"))]
fn start_otlp(
    config: &Config,
    _events: &Events,
    _registry: &Registry,
) -> Result<Otlp, DaemonError> {
    if config.otlp().is_some() {
        tracing::warn!(
            "the config file has an [otlp] table, but this build has no OTLP support (feature `otlp`); ignoring it"
        );
    }
    Ok(None)
}

/// Pushes the last batch and stops the OTLP exporter.
#[cfg(feature = "otlp")]
async fn stop_otlp(otlp: Otlp) {
    if let Some(otlp) = otlp
        && let Err(error) = otlp.shutdown().await
    {
        tracing::warn!(%error, "the final OTLP push failed");
    }
}

#[cfg(not(feature = "otlp"))]
async fn stop_otlp(_otlp: Otlp) {}

/// Binds `host:port`, or `:port` on every interface (IPv6 and IPv4 where the
/// machine has IPv6, else IPv4).
async fn bind(address: &str) -> Result<TcpListener, DaemonError> {
    let invalid = |reason: String| DaemonError::ListenAddress {
        address: address.to_owned(),
        reason,
    };
    let listen_error = |source| DaemonError::Listen {
        address: address.to_owned(),
        source,
    };
    if let Some(port) = address.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| invalid(format!("{port:?} is not a port number")))?;
        return match TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))).await {
            Ok(listener) => Ok(listener),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(listen_error(e)),
            // No IPv6 on this machine: all IPv4 interfaces then.
            Err(_) => TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
                .await
                .map_err(listen_error),
        };
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(invalid("expected host:port or :port".into()));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(invalid("expected host:port or :port".into()));
    }
    let mut resolved = tokio::net::lookup_host(address)
        .await
        .map_err(|e| invalid(format!("cannot resolve the host: {e}")))?;
    let Some(socket_address) = resolved.next() else {
        return Err(invalid("the host resolves to no address".into()));
    };
    TcpListener::bind(socket_address)
        .await
        .map_err(listen_error)
}

/// The running targets and the config they came from.
struct Supervisor {
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
struct ReloadSummary {
    added: Vec<String>,
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
    /// Re-reads the config file and the web config file and applies them;
    /// on any error in either nothing changes.
    async fn reload(&mut self) -> Result<ReloadSummary, String> {
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

    async fn shutdown(self) {
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
    let connection = Connection::start(target.connection_options(), events).map_err(|source| {
        DaemonError::Target {
            target: target.name().to_owned(),
            source,
        }
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
fn validate_targets<'a>(
    targets: impl Iterator<Item = &'a TargetConfig>,
) -> Result<(), DaemonError> {
    for target in targets {
        target
            .connection_options()
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

/// A reload asked for over HTTP, answered when it is done.
struct ReloadRequest {
    reply: oneshot::Sender<Result<ReloadSummary, String>>,
}

fn reload_router(requests: mpsc::Sender<ReloadRequest>) -> Router {
    Router::new()
        .route("/-/reload", post(reload))
        .method_not_allowed_fallback(crate::http::method_not_allowed)
        .with_state(requests)
}

async fn reload(State(requests): State<mpsc::Sender<ReloadRequest>>) -> (StatusCode, String) {
    let (reply, answer) = oneshot::channel();
    if requests.send(ReloadRequest { reply }).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    match answer.await {
        Ok(Ok(summary)) => (StatusCode::OK, format!("config reloaded: {summary}\n")),
        Ok(Err(error)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("config reload failed: {error}\n"),
        ),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
    }
}

/// SIGHUP as a stream of `()`; empty (never yields) if the handler cannot be
/// installed, which is logged.
fn hangup_signals() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangup) => {
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    // A reload already pending covers this one too.
                    let _ = tx.try_send(());
                }
            });
        }
        Err(error) => tracing::warn!(%error, "cannot handle SIGHUP; reload with POST /-/reload"),
    }
    rx
}
