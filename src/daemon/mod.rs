//! The `mqtt-pulse` daemon: one [`Connection`](crate::connection::Connection)
//! per configured target, the Prometheus exporter, the HTTP server(s), reload
//! and shutdown.
//!
//! It owns the process lifecycle — start everything or fail with one line,
//! reload on SIGHUP or `POST /-/reload` (an invalid file changes nothing), and
//! on SIGINT/SIGTERM stop serving, disconnect every target cleanly and return.
//! It must never leave a half-applied config; the `supervisor` module sees to that.
//!
//! * `cli`, `logging` — flags and the log format;
//! * `error` — [`DaemonError`], the one line the binary prints;
//! * `supervisor` — the running targets and reloads; `reload` — what asks for
//!   one (`POST /-/reload`, SIGHUP);
//! * `listen` — `--web.listen-address`; `otlp` — the OTLP push from the config;
//! * `shard` — `--shard.count`/`--shard.index` and which targets a shard
//!   owns; `readiness` — what `/-/ready` waits for;
//! * `healthcheck` — the `healthcheck` subcommand; `ping` — the `ping`
//!   subcommand; `watch` — the `watch` subcommand; `report` — the lines
//!   `ping` and `watch` share; `client` — the HTTP client of `healthcheck`
//!   and `watch`; `memory` — the allocator's purge thread.

mod cli;
mod client;
mod error;
mod healthcheck;
mod listen;
mod logging;
mod memory;
mod otlp;
mod ping;
mod readiness;
mod reload;
mod report;
mod shard;
mod supervisor;
mod watch;

pub use cli::{Cli, Command, LONG_VERSION, LogFormat, LogLevel, PingArgs, WatchArgs};
pub use error::DaemonError;
pub use logging::init_logging;
pub use memory::return_freed_memory;
pub use shard::{MAX_SHARD_COUNT, Shard, ShardError};

use std::future::Future;
use std::time::Duration;

use axum::Router;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::events::{ClientId, Events, FailureReason, Status};
use crate::exporter::metrics::MetricsBuilder;
use crate::http::WebConfig;
use healthcheck::healthcheck;
use listen::bind;
use otlp::{start_otlp, stop_otlp};
use reload::{ReloadRequest, hangup_signals, reload_router};
use supervisor::{Supervisor, off_the_runtime, share, shared_client_ids, validate_targets};

/// Runs the daemon as the binary does: `--config.check`, or start, serve until
/// SIGINT/SIGTERM, shut down. Builds its own multi-threaded runtime.
///
/// # Errors
/// [`DaemonError`] for anything that keeps the daemon from starting.
pub fn main(cli: Cli) -> Result<(), DaemonError> {
    return_freed_memory();
    install_crypto_provider();
    if let Some(Command::Healthcheck) = cli.command {
        let address = cli.listen_addresses.first().map_or(":9883", String::as_str);
        let tls = match &cli.web_config_file {
            Some(path) => WebConfig::load(path)?.is_tls(),
            None => false,
        };
        return healthcheck(address, tls);
    }
    if let Some(Command::Ping(args)) = cli.command {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(DaemonError::Runtime)?;
        let url = report::shown_url(&args.url);
        return match runtime.block_on(ping::ping(args, crate::http::shutdown_signal()))? {
            true => Ok(()),
            false => Err(DaemonError::PingDown(url)),
        };
    }
    if let Some(Command::Watch(args)) = cli.command {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(DaemonError::Runtime)?;
        return runtime.block_on(watch::watch(args, crate::http::shutdown_signal()));
    }
    let shard = cli.shard()?;
    if cli.config_check {
        return check_config(&cli, shard);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    runtime.block_on(run(cli, crate::http::shutdown_signal()))
}

/// The daemon is the process, so it picks the process's rustls provider: ring
/// (the one it compiles). A library never does this; see `connection::tls`.
fn install_crypto_provider() {
    // Err only if one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn check_config(cli: &Cli, shard: Shard) -> Result<(), DaemonError> {
    let config = Config::load_or_default(cli.config_file.as_deref())?;
    // What starting would refuse: a share larger than one process watches;
    // and what it would warn of.
    let owned = share(config.clone(), shard)?;
    // What starting would check too: certificate and key contents, the web config.
    validate_targets(config.targets().iter())?;
    if let Some(path) = &cli.web_config_file {
        WebConfig::load(path)?;
    }
    for warning in config.warnings() {
        eprintln!("{warning}");
    }
    if let Some(warning) = shared_client_ids(shard, &owned) {
        eprintln!("{warning}");
    }
    let names: Vec<&str> = config.targets().iter().map(|t| t.name()).collect();
    let origin = match cli.config_file.as_deref() {
        Some(path) => path.display().to_string(),
        None => "no config file (built-in default)".to_owned(),
    };
    let targets = |count: usize| if count == 1 { "target" } else { "targets" };
    let list_paths = |config: &Config| {
        let paths: Vec<&str> = config.paths().iter().map(|p| p.name()).collect();
        match paths.len() {
            0 => String::new(),
            1 => format!(", 1 path ({})", paths[0]),
            n => format!(", {n} paths ({})", paths.join(", ")),
        }
    };
    if shard == Shard::ALL {
        println!(
            "{origin}: OK, {} {} ({}){}",
            names.len(),
            targets(names.len()),
            names.join(", "),
            list_paths(&config)
        );
    } else {
        let owned_names: Vec<&str> = owned.targets().iter().map(|t| t.name()).collect();
        println!(
            "{origin}: OK, {} {}; {shard} owns {} ({}){}",
            names.len(),
            targets(names.len()),
            owned_names.len(),
            owned_names.join(", "),
            list_paths(&owned)
        );
    }
    Ok(())
}

/// Starts every target and the HTTP server(s), serves until `shutdown`
/// completes, then stops serving and disconnects every target cleanly.
///
/// # Errors
/// [`DaemonError`] if the config, a target, the exporter or a listen address
/// is unusable; nothing keeps running then.
pub async fn run(cli: Cli, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let shard = cli.shard()?;
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
    let (config, web_config) = tokio::select! {
        biased;
        () = &mut shutdown => return Ok(()),
        loaded = load_files(&cli) => loaded?,
    };
    let mut listeners = Vec::new();
    for address in &cli.listen_addresses {
        listeners.push((address.clone(), bind(address).await?));
    }

    // Without a config file a newcomer's broker may well be elsewhere: tell
    // them in one line what to do rather than let them read retry warnings.
    let unconfigured = config
        .origin()
        .is_none()
        .then(|| config.targets().first())
        .flatten()
        .filter(|target| shard.owns(target.name()))
        .map(|target| target.options().client_id().clone());
    let events = Events::new();
    let hint =
        unconfigured.map(|client_id| tokio::spawn(hint_without_config(events.clone(), client_id)));
    let registry = Registry::new();
    let mut metrics = MetricsBuilder::new(&events)
        .with_registry(registry.clone())
        .with_process_metrics(true);
    if let Some(bounds) = config.rtt_buckets() {
        metrics = metrics.with_buckets(bounds);
    }
    if let Some(schema) = config.rtt_native_schema() {
        metrics = metrics.with_native_schema(schema);
    }
    let handle = metrics.install()?;
    if let Err(error) = crate::connection::pacing::register_metrics(&registry) {
        // The registry is ours and holds no such name; never expected.
        tracing::warn!(%error, "not exporting the connect pacing gauges");
    }
    // Only with a web config file: without one no request is ever refused,
    // and a reload can add basic auth only to a file that exists.
    if cli.web_config_file.is_some()
        && let Err(error) = web_config.register_metrics(&registry)
    {
        // The registry is ours and holds no such name; never expected.
        tracing::warn!(%error, "not counting basic-auth refusals");
    }
    // Before the targets start, so their first status changes are counted.
    let otlp = start_otlp(&config, &events, &registry)?;
    let web_config_file = cli
        .web_config_file
        .clone()
        .map(|path| (path, web_config.clone()));
    let starting = Supervisor::start(
        events,
        &registry,
        cli.config_file.clone(),
        web_config_file,
        (config, shard),
    );
    let mut supervisor = tokio::select! {
        biased;
        () = &mut shutdown => return Ok(()),
        started = starting => started?,
    };

    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel(8);
    // The library router sets no fallbacks; the daemon answers unknown paths
    // and other methods as it always has, `/-/reload` included.
    let app = crate::http::with_default_fallbacks(
        crate::http::router_with_readiness(handle, supervisor.readiness())
            .merge(reload_router(reload_tx)),
    );
    let (stop_serving, mut servers) = serve(listeners, app, &web_config);
    tracing::info!(
        version = LONG_VERSION,
        targets = supervisor.running(),
        shard_index = shard.index(),
        shard_count = shard.count(),
        listen = ?cli.listen_addresses,
        config = ?cli.config_file,
        "mqtt-pulse started"
    );

    reload_until(&mut supervisor, &mut reload_rx, &mut hangups, &mut shutdown).await;

    tracing::info!("shutting down");
    if let Some(hint) = hint {
        hint.abort();
    }
    let _ = stop_serving.send(true);
    while servers.join_next().await.is_some() {}
    // The last push carries the targets as they were, not as the daemon's own
    // disconnects leave them.
    stop_otlp(otlp).await;
    supervisor.shutdown().await;
    Ok(())
}

/// How long the daemon without a config file watches its default target's
/// first attempts before it stays quiet: a connect timeout and then some.
const HINT_WITHIN: Duration = Duration::from_secs(10);

/// Without `--config.file`: if the default target finds nothing listening at
/// `mqtt://127.0.0.1:1883`, one `warn` line saying what to do. Failed
/// attempts while down are counters in the hub, not events, so it looks at
/// the hub every 100 ms until the target is up, fails, or [`HINT_WITHIN`] passed.
async fn hint_without_config(events: Events, client_id: ClientId) {
    let deadline = tokio::time::Instant::now() + HINT_WITHIN;
    while tokio::time::Instant::now() < deadline {
        if events.status(client_id.as_str()) == Some(Status::Up) {
            return;
        }
        let failure = events
            .failures()
            .into_iter()
            .find(|failure| failure.client_id == client_id);
        if let Some(failure) = failure {
            if let Some(hint) = nothing_listens_hint(failure.reason) {
                tracing::warn!(reason = %failure.reason, "{hint}");
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The line for a first failure of the default target, if it says that no
/// broker is there (rather than one that refused us, which its own warning
/// explains).
fn nothing_listens_hint(reason: FailureReason) -> Option<String> {
    matches!(
        reason,
        FailureReason::ConnectionRefused | FailureReason::Timeout
    )
    .then(|| {
        format!(
            "no --config.file given and no MQTT broker answers at {}: start one there, \
             pass --config.file FILE (see mqtt-pulse.example.toml), \
             or try a broker with `mqtt-pulse ping URL`",
            crate::config::DEFAULT_URL
        )
    })
}

/// The config file and the web config, read off this task (which also waits
/// for the signals).
async fn load_files(cli: &Cli) -> Result<(Config, WebConfig), DaemonError> {
    let (config_path, web_config_path) = (cli.config_file.clone(), cli.web_config_file.clone());
    off_the_runtime(move || {
        let web_config = match web_config_path.as_deref() {
            Some(path) => WebConfig::load(path)?,
            None => WebConfig::default(),
        };
        Ok((Config::load_or_default(config_path.as_deref())?, web_config))
    })
    .await
}

/// Reloads on each `POST /-/reload` (answered when done) and SIGHUP, one at
/// a time, until `shutdown` completes — which also ends a reload still
/// reading its files.
async fn reload_until(
    supervisor: &mut Supervisor,
    requests: &mut mpsc::Receiver<ReloadRequest>,
    hangups: &mut mpsc::Receiver<()>,
    mut shutdown: impl Future<Output = ()> + Unpin,
) {
    loop {
        let request = tokio::select! {
            () = &mut shutdown => return,
            Some(request) = requests.recv() => Some(request),
            Some(()) = hangups.recv() => None,
        };
        let outcome = tokio::select! {
            biased;
            () = &mut shutdown => return,
            outcome = supervisor.reload() => outcome,
        };
        if let Some(request) = request {
            let _ = request.reply.send(outcome);
        }
    }
}

/// Serves `app` on every listener until the returned sender says stop; the
/// set finishes when every server has let its requests in flight finish.
fn serve(
    listeners: Vec<(String, TcpListener)>,
    app: Router,
    web_config: &WebConfig,
) -> (tokio::sync::watch::Sender<bool>, JoinSet<()>) {
    let (stop_serving, serving_stopped) = tokio::sync::watch::channel(false);
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
    (stop_serving, servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_broker_that_is_not_there_gets_the_hint() {
        let hint = nothing_listens_hint(FailureReason::ConnectionRefused).unwrap();
        assert!(hint.contains("mqtt://127.0.0.1:1883"), "{hint}");
        assert!(hint.contains("--config.file"), "{hint}");
        assert!(hint.contains("mqtt-pulse ping URL"), "{hint}");
        assert!(!hint.contains('\n'), "one line: {hint}");
        assert!(nothing_listens_hint(FailureReason::Timeout).is_some());
        assert_eq!(nothing_listens_hint(FailureReason::NotAuthorized), None);
    }
}
