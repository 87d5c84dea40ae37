//! [`DaemonError`]: why the daemon could not start or keep running.

use std::io;

use crate::config::ConfigError;
use crate::connection::OptionsError;
use crate::exporter::metrics::BuildError;

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
    /// A path cannot start (its settings, or its targets).
    #[error("path {path:?}: {source}")]
    Path {
        /// The path's name.
        path: String,
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
    /// The config file or the web config was not read in time (a hung file
    /// system).
    #[error("the config files were not read within {0:?}")]
    FilesTimedOut(std::time::Duration),
    /// `mqtt-pulse ping`: the broker was not up when it stopped.
    #[error("ping {0}: not up at the end")]
    PingDown(String),
    /// `mqtt-pulse watch`: the URL or a flag is unusable, the daemon refused
    /// the request, or it was never reached.
    #[error("watch {url}: {reason}")]
    Watch {
        /// The daemon's URL as given (a password in it masked).
        url: String,
        /// What went wrong, and what to do.
        reason: String,
    },
    /// The tokio runtime could not be started.
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
}
