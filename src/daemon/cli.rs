//! The daemon's command line, in the style of node_exporter and
//! blackbox_exporter: dotted flag names, each also read from an environment
//! variable. It only describes the flags; it never acts on them.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use super::ping::PingArgs;
use super::shard::{Shard, ShardError};
pub use super::watch::WatchArgs;

/// `--version` text: version, source revision and compiler.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("MQTT_PULSE_REVISION"),
    ", rustc ",
    env!("MQTT_PULSE_RUSTC_VERSION"),
    ")"
);

/// Command-line flags of the `mqtt-pulse` daemon.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "mqtt-pulse",
    version = LONG_VERSION,
    about = "MQTT 3.1.1 client-health monitor: keeps MQTT connections alive and \
             exports their status and keep-alive round trips as Prometheus metrics.",
    after_help = "Without --config.file it monitors mqtt://127.0.0.1:1883; to try \
                  another broker first, run `mqtt-pulse ping URL`. SIGHUP or \
                  POST /-/reload re-reads the config file and the web config file."
)]
pub struct Cli {
    /// What to do instead of running the daemon.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The TOML config file (see mqtt-pulse.example.toml).
    #[arg(
        long = "config.file",
        env = "MQTT_PULSE_CONFIG_FILE",
        value_name = "PATH"
    )]
    pub config_file: Option<PathBuf>,

    /// Validate the config file, print a one-line summary and exit (0 valid, 1 not).
    #[arg(long = "config.check")]
    pub config_check: bool,

    /// How many replicas share the config file's targets: each watches only
    /// its share, chosen by rendezvous hashing of the target names (1 to 256).
    #[arg(
        long = "shard.count",
        env = "MQTT_PULSE_SHARD_COUNT",
        value_name = "N",
        default_value = "1"
    )]
    pub shard_count: String,

    /// Which of the --shard.count replicas this is, from 0; or `hostname`: the
    /// number at the end of the host name (a StatefulSet pod mqtt-pulse-2 is 2).
    #[arg(
        long = "shard.index",
        env = "MQTT_PULSE_SHARD_INDEX",
        value_name = "I|hostname",
        default_value = "0"
    )]
    pub shard_index: String,

    /// Address to serve /metrics on, as host:port or :port (all interfaces).
    /// Repeat the flag to listen on several.
    #[arg(
        long = "web.listen-address",
        env = "MQTT_PULSE_WEB_LISTEN_ADDRESS",
        value_name = "ADDRESS",
        default_value = ":9883",
        value_delimiter = ',',
        global = true
    )]
    pub listen_addresses: Vec<String>,

    /// Prometheus exporter-toolkit web config file: TLS (certificate files are
    /// re-read when they change), client certificates, basic auth, response
    /// headers, rate limit. Re-read on SIGHUP and POST /-/reload (turning TLS
    /// on or off takes a restart); /-/healthy and /-/ready stay open.
    #[arg(
        long = "web.config.file",
        env = "MQTT_PULSE_WEB_CONFIG_FILE",
        value_name = "PATH",
        global = true
    )]
    pub web_config_file: Option<PathBuf>,

    /// Only log messages at this level or more severe [default: info; warn
    /// for `ping` and `watch`, whose events are their output].
    #[arg(
        long = "log.level",
        env = "MQTT_PULSE_LOG_LEVEL",
        value_enum,
        global = true
    )]
    pub log_level: Option<LogLevel>,

    /// Log line format.
    #[arg(
        long = "log.format",
        env = "MQTT_PULSE_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Logfmt,
        global = true
    )]
    pub log_format: LogFormat,
}

impl Cli {
    /// The shard `--shard.count` and `--shard.index` name; [`Shard::ALL`]
    /// without them.
    ///
    /// # Errors
    /// [`ShardError`] naming the flag that is unusable.
    pub fn shard(&self) -> Result<Shard, ShardError> {
        Shard::from_flags(
            &self.shard_count,
            &self.shard_index,
            crate::config::hostname,
        )
    }

    /// The level to log at: `--log.level`, else `info` — `warn` for `ping`
    /// and `watch`, which print their events themselves (on standard output; logs go to
    /// standard error).
    pub fn log_level(&self) -> LogLevel {
        match (self.log_level, &self.command) {
            (Some(level), _) => level,
            (None, Some(Command::Ping(_) | Command::Watch(_))) => LogLevel::Warn,
            (None, _) => LogLevel::Info,
        }
    }
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Ask a running mqtt-pulse at the first --web.listen-address whether it is
    /// healthy (GET /-/healthy); exit 0 if so, 1 if not. For container health
    /// checks, where the image has no curl. With a --web.config.file that turns
    /// TLS on it asks over TLS (any server certificate accepted: it is asking
    /// its own machine).
    Healthcheck,
    /// Connect to one broker and print one line per event — up, each keep-alive
    /// round trip, down with its reason — and, on Ctrl-C, SIGTERM or after
    /// --count probes, a summary (round trips min/avg/max/stddev, losses, time
    /// up). Exit 0 if the broker was up at the end, 1 if not. MQTT 3.1.1 only:
    /// the library speaks no other version, so there is no protocol flag.
    Ping(PingArgs),
    /// Follow a running mqtt-pulse's /events and print ping's lines for every
    /// client it watches, prefixed with the client id (up, each round trip,
    /// down with its reason). Reconnects when the stream drops; on Ctrl-C or
    /// SIGTERM prints a summary per client. Exit 1 if it never connected or
    /// the daemon refused the request (credentials, selection).
    Watch(WatchArgs),
}

/// Severity threshold of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Everything, including each failed connect attempt.
    Debug,
    /// Status transitions, startup, reloads.
    Info,
    /// Problems that need a look.
    Warn,
    /// Failures only.
    Error,
}

/// How log lines are written (to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `ts=… level=info target=… msg="…" key=value`, as Prometheus components log.
    Logfmt,
    /// One flat JSON object per line, with the same keys (`ts`, `level`, `msg`, …).
    Json,
}
