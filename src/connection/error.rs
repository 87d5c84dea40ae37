//! [`OptionsError`]: why connection options cannot be used.
//!
//! A leaf of the connection layer: every part of it (the broker URL, TLS,
//! credentials, labels) reports through this one enum, which imports none of
//! them. Its messages never contain a password.

use std::path::PathBuf;
use std::time::Duration;

/// Why connection options cannot be used. Messages never contain a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// The broker URL does not parse.
    #[error("invalid broker URL: {0}")]
    Url(url::ParseError),
    /// The URL's scheme is not one of mqtt, mqtts, ws, wss.
    #[error("unsupported broker URL scheme {0:?}: use mqtt://, mqtts://, ws:// or wss://")]
    Scheme(String),
    /// A ws:// or wss:// URL in a build without the `websocket` feature.
    #[error(
        "{0}:// needs WebSocket support, which this build of mqtt-pulse leaves out (cargo feature `websocket`)"
    )]
    NoWebSocket(&'static str),
    /// The URL has no host.
    #[error("the broker URL has no host")]
    NoHost,
    /// The client id is empty.
    #[error("the client id is empty")]
    EmptyClientId,
    /// MQTT carries keep-alive as whole seconds in 16 bits.
    #[error("keep-alive must be whole seconds from 1s to 65535s, not {0:?}")]
    KeepAlive(Duration),
    /// A zero connect or ping timeout would fail every attempt.
    #[error("the {0} must be longer than zero")]
    ZeroTimeout(&'static str),
    /// TLS settings were given for a plain `mqtt://` or `ws://` URL.
    #[error("TLS settings are given but the URL scheme is {0}://; use mqtts:// or wss://")]
    TlsOnPlainScheme(&'static str),
    /// The password file cannot be read.
    #[error("cannot read the password file {}: {source}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate or key file cannot be read or holds no usable item.
    #[error("cannot use the {what} file {}: {reason}", path.display())]
    Pem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// No CA file was given and the system has no usable root certificates.
    #[error("no CA file is set and no system root certificates could be loaded: {0}")]
    NoSystemRoots(String),
    /// An extra label's name is not a valid Prometheus label name, is taken or
    /// is too long, or its value is too long.
    #[error("invalid label {name:?}: {problem}")]
    Label {
        /// The name.
        name: String,
        /// The rule it breaks.
        problem: &'static str,
    },
    /// Reading the connection's files took too long (a hung file system) or
    /// the reader failed.
    #[error("the password, CA, certificate or key files were not read within {0:?}")]
    ReadTimedOut(Duration),
    /// No rustls crypto provider is installed for the process and this build
    /// has none of its own (feature `ring`).
    #[error(
        "no rustls crypto provider is installed for this process: call \
         rustls::crypto::aws_lc_rs::default_provider().install_default() (or ring's) at startup, \
         or enable mqtt-pulse's `ring` feature"
    )]
    NoCryptoProvider,
    /// rustls rejected the TLS configuration.
    #[error("invalid TLS configuration: {0}")]
    Tls(rustls::Error),
    /// A setting of the round-trip probe cannot be used.
    #[error("invalid probe {key}: {problem}")]
    Probe {
        /// The setting (`topic`, `interval`, `timeout`).
        key: &'static str,
        /// The rule it breaks.
        problem: String,
    },
    /// A setting of a broker-to-broker path cannot be used.
    #[error("invalid path {key}: {problem}")]
    Path {
        /// The setting (`topic`, `interval`, `timeout`, `to`).
        key: &'static str,
        /// The rule it breaks.
        problem: String,
    },
    /// The connection was started outside a tokio runtime.
    #[error("a connection must be started inside a tokio runtime")]
    NoRuntime,
}
