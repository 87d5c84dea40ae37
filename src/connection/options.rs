//! What a connection is made from, validated into rumqttc's `MqttOptions`
//! (3.1.1's or MQTT 5's, by [`Protocol`]).
//! Everything that can be wrong with the input is an [`OptionsError`] here,
//! before any task starts; nothing in this file may panic on a bad value or put a
//! password into an error or a `Debug` string.
//!
//! [`ConnectionOptions`] is the one owner of a connection's settings and their
//! defaults: the config file builds one per target and compares them on reload,
//! so a default or a rule written here is written nowhere else.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use url::Url;

use super::backoff::Backoff;
use super::broker_url::{BrokerUrl, Scheme};
use super::error::OptionsError;
use super::expiry::ChainExpiry;
#[cfg(feature = "daemon")]
use super::files::on_a_thread;
use super::files::{off_the_runtime, read_password};
use super::labels::{label_name_problem, label_value_problem};
use super::probe::ProbeOptions;
use super::protocol::Protocol;
use super::tls::TlsOptions;
use super::wire::{self, Settings, SettingsMut};
use crate::events::{ClientId, ClientInfo};

/// The largest packet a connection sends or accepts: 256 KiB.
const MAX_PACKET_SIZE: usize = 256 * 1024;

/// The keep-alive of a connection that sets none.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// The connect timeout of a connection that sets none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The settings of one monitored MQTT connection.
///
/// Two options are equal when every setting is, which is how a config reload
/// tells a changed target from an unchanged one. A password file is compared
/// by its path, not its contents: its contents are read again at every
/// connect attempt anyway, as are the TLS files.
///
/// ```
/// use std::time::Duration;
/// use mqtt_pulse::connection::ConnectionOptions;
///
/// let options = ConnectionOptions::new("probe-plant-a", "mqtt://127.0.0.1:1883")?
///     .with_keep_alive(Duration::from_secs(2))
///     .with_credentials("probe", "s3cret");
/// assert_eq!(options.broker(), "127.0.0.1:1883");
/// assert_eq!(options.ping_timeout(), Duration::from_secs(1));
/// assert!(!format!("{options:?}").contains("s3cret"));
/// # Ok::<(), mqtt_pulse::connection::OptionsError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionOptions {
    pub(crate) client_id: ClientId,
    broker: BrokerUrl,
    pub(crate) keep_alive: Duration,
    ping_timeout: Option<Duration>,
    pub(crate) connect_timeout: Duration,
    username: Option<String>,
    password: Option<Password>,
    tls: TlsOptions,
    clean_session: bool,
    pub(crate) backoff: Backoff,
    pub(crate) publish_capacity: usize,
    pub(crate) publish_bytes: usize,
    max_inflight: u16,
    connect_concurrency: usize,
    labels: BTreeMap<String, String>,
    probe: Option<ProbeOptions>,
    protocol: Protocol,
    /// Where the TLS verifier of every configuration built from these
    /// options (or a clone) records the chain's expiry, for the driver to
    /// take: runtime state, equal whatever it holds (see [`ChainExpiry`]).
    pub(crate) chain_expiry: ChainExpiry,
}

/// Where the password comes from. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Password {
    /// Written out (in the URL, the code or the config file).
    Inline(String),
    /// Read from this file at every connect attempt.
    File(PathBuf),
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Password::Inline(_) => f.write_str("Inline(<redacted>)"),
            Password::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// Checks the MQTT rule for keep-alive: whole seconds in 16 bits, 1 s to
/// 65,535 s. The config file applies it when it reads `keep_alive`, the
/// connection when it starts.
/// The `broker` label: `host:port`, `[v6]:port` for an IPv6 address. The one
/// spelling of a broker, for [`ConnectionOptions`] and the tracker alike.
pub(crate) fn broker_label(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The ping timeout unless set: half the keep-alive, so a silent broker is
/// noticed within 1.5 keep-alives rather than rumqttc's 2.
pub(crate) fn default_ping_timeout(keep_alive: Duration) -> Duration {
    keep_alive / 2
}

pub(crate) fn check_keep_alive(keep_alive: Duration) -> Result<(), OptionsError> {
    if keep_alive.subsec_nanos() != 0 || !(1..=65_535).contains(&keep_alive.as_secs()) {
        return Err(OptionsError::KeepAlive(keep_alive));
    }
    Ok(())
}

impl ConnectionOptions {
    /// Options for `client_id` connecting to `url` (`mqtt://host[:1883]`,
    /// `mqtts://host[:8883]`, `ws://host[:80]/path`, `wss://host[:443]/path`).
    /// A user name and password in the URL are used as credentials.
    ///
    /// Defaults: keep-alive 5 s, ping timeout half the keep-alive, connect
    /// timeout 5 s, clean session, backoff 100 ms doubling to 30 s, system TLS
    /// roots, 1,024 queued incoming publishes, 10 publishes in flight, at
    /// most 64 connect handshakes in flight to the broker.
    ///
    /// # Errors
    /// [`OptionsError`] if the URL does not parse, has another scheme, or has no
    /// host, or if the client id is empty.
    pub fn new(client_id: impl Into<ClientId>, url: &str) -> Result<Self, OptionsError> {
        let client_id = client_id.into();
        if client_id.as_str().is_empty() {
            return Err(OptionsError::EmptyClientId);
        }
        let url = Url::parse(url).map_err(OptionsError::Url)?;
        let (broker, username, password) = BrokerUrl::from_url(url)?;
        let password = password.map(Password::Inline);
        Ok(Self::for_broker(client_id, broker).with_login(username, password))
    }

    /// Options with every default for a client id already known not to be
    /// empty and a URL already parsed.
    pub(crate) fn for_broker(client_id: ClientId, broker: BrokerUrl) -> Self {
        Self {
            client_id,
            broker,
            keep_alive: DEFAULT_KEEP_ALIVE,
            ping_timeout: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            username: None,
            password: None,
            tls: TlsOptions::default(),
            clean_session: true,
            backoff: Backoff::default(),
            publish_capacity: super::DEFAULT_PUBLISH_CAPACITY,
            publish_bytes: super::DEFAULT_PUBLISH_BYTES,
            max_inflight: 10,
            connect_concurrency: super::DEFAULT_CONNECT_CONCURRENCY,
            labels: BTreeMap::new(),
            probe: None,
            protocol: Protocol::default(),
            chain_expiry: ChainExpiry::default(),
        }
    }

    /// Sets the MQTT protocol version: [`Protocol::V5`] for MQTT 5, whose
    /// reason codes say why a broker refused or dropped the connection
    /// (`session_taken_over`, `server_shutting_down`, …) and whose broker may
    /// impose its own keep-alive (Server Keep Alive), which the connection
    /// then pings within. Defaults to [`Protocol::V311`].
    ///
    /// ```
    /// use mqtt_pulse::connection::{ConnectionOptions, Protocol};
    ///
    /// let options = ConnectionOptions::new("probe", "mqtt://127.0.0.1:1883")?
    ///     .with_protocol(Protocol::V5);
    /// assert_eq!(options.protocol(), Protocol::V5);
    /// # Ok::<(), mqtt_pulse::connection::OptionsError>(())
    /// ```
    #[must_use]
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Sets how often the connection pings the broker: whole seconds, 1 to
    /// 65,535 (checked when the connection starts). Defaults to 5 s.
    #[must_use]
    pub fn with_keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// Sets how long a PINGREQ may go unanswered before the connection counts
    /// as lost (`ping_timeout`). Defaults to half the keep-alive, so a silent
    /// broker is noticed within 1.5 keep-alive periods.
    #[must_use]
    pub fn with_ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = Some(timeout);
        self
    }

    /// Sets how long the TCP, TLS and MQTT handshakes together may take.
    /// Defaults to 5 s.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the user name and password sent in CONNECT.
    #[must_use]
    pub fn with_credentials(
        self,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        let password = Password::Inline(password.into());
        self.with_login(Some(username.into()), Some(password))
    }

    /// Sets the user name, with the password read from `path` at every
    /// connect attempt, so a rotated password is used from the next attempt
    /// on (one trailing newline is ignored). The file must be a regular file
    /// of at most 65,537 bytes holding at most 65,535 bytes of password.
    #[must_use]
    pub fn with_password_file(self, username: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.with_login(Some(username.into()), Some(Password::File(path.into())))
    }

    /// Sets the TLS settings of an `mqtts://` or `wss://` connection.
    /// Defaults to the system roots and no client certificate.
    #[must_use]
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Sets the CONNECT clean-session flag. Defaults to `true`.
    #[must_use]
    pub fn with_clean_session(mut self, clean_session: bool) -> Self {
        self.clean_session = clean_session;
        self
    }

    /// Sets the reconnect backoff. Defaults to 100 ms doubling up to 30 s.
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets how many incoming PUBLISH packets wait for
    /// [`Connection::take_publishes`](super::Connection::take_publishes)'s
    /// receiver before more are dropped (and counted). Defaults to 1,024.
    #[must_use]
    pub fn with_publish_capacity(mut self, capacity: usize) -> Self {
        self.publish_capacity = capacity.max(1);
        self
    }

    /// Sets how many bytes (payload + topic) of incoming PUBLISH packets wait
    /// for [`Connection::take_publishes`](super::Connection::take_publishes)'s
    /// receiver before more are dropped (and counted): the memory a reader
    /// that stalls can cost, whatever the broker pushes. A publish larger
    /// than the bound is always dropped. Defaults to 8 MiB
    /// ([`DEFAULT_PUBLISH_BYTES`](super::DEFAULT_PUBLISH_BYTES)); a single
    /// publish is at most 256 KiB.
    #[must_use]
    pub fn with_publish_byte_limit(mut self, bytes: usize) -> Self {
        self.publish_bytes = bytes;
        self
    }

    /// Sets how many outgoing QoS 1 and 2 publishes may await their
    /// acknowledgement at once (0 is taken as 1). Defaults to 10: rumqttc
    /// preallocates a slot per message, and a probe publishes little.
    #[must_use]
    pub fn with_max_inflight(mut self, max_inflight: u16) -> Self {
        self.max_inflight = max_inflight.max(1);
        self
    }

    /// Sets how many connect handshakes (TCP connect through CONNACK) may be
    /// in flight at once to this connection's broker, counted over every
    /// connection of the process to the same `host:port` with the same
    /// limit; the others wait their turn, first come, first served, and
    /// their connect timeout starts when their turn does. 0 turns pacing off.
    /// Defaults to [`DEFAULT_CONNECT_CONCURRENCY`](super::DEFAULT_CONNECT_CONCURRENCY)
    /// (64): below Mosquitto's listen backlog of 100, so that many targets
    /// starting (or reconnecting) at once do not overflow it and wait out
    /// the kernel's 1 s SYN retransmit (see [`pacing`](super::pacing)).
    #[must_use]
    pub fn with_connect_concurrency(mut self, limit: usize) -> Self {
        self.connect_concurrency = limit;
        self
    }

    /// Sets extra constant labels for this client's metrics (say
    /// `site="north"`); a name given twice keeps its last value. Names and
    /// value lengths are checked when the connection starts (see
    /// [`MAX_LABEL_VALUE_LENGTH`](super::MAX_LABEL_VALUE_LENGTH)). Defaults
    /// to none.
    #[must_use]
    pub fn with_labels<K, V>(mut self, labels: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.labels = labels
            .into_iter()
            .map(|(name, value)| (name.into(), value.into()))
            .collect();
        self
    }

    /// Sets the user name and where the password comes from. Without a user
    /// name nothing is sent (MQTT 3.1.1 has no password without one).
    pub(crate) fn with_login(
        mut self,
        username: Option<String>,
        password: Option<Password>,
    ) -> Self {
        self.username = username;
        self.password = password;
        self
    }

    /// What the hub is told about this client: its broker and labels.
    pub(crate) fn client_info(&self) -> ClientInfo {
        let labels = self.labels.iter().map(|(k, v)| (k.clone(), v.clone()));
        ClientInfo::new(self.broker()).with_labels(labels)
    }

    /// The client id.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    /// The broker URL, without any credentials it was given with.
    pub fn url(&self) -> &Url {
        &self.broker.url
    }

    /// The broker as `host:port`: the `broker` label of the metrics.
    pub fn broker(&self) -> String {
        broker_label(&self.broker.host, self.broker.port)
    }

    /// How often the connection pings the broker.
    pub fn keep_alive(&self) -> Duration {
        self.keep_alive
    }

    /// The ping timeout in force (explicit, or half the keep-alive).
    pub fn ping_timeout(&self) -> Duration {
        self.ping_timeout
            .unwrap_or_else(|| default_ping_timeout(self.keep_alive))
    }

    /// The ping timeout in force once the broker accepted `keep_alive`
    /// (which an MQTT 5 broker may impose): explicit, or half of it.
    pub(crate) fn ping_timeout_for(&self, keep_alive: Duration) -> Duration {
        self.ping_timeout
            .unwrap_or_else(|| default_ping_timeout(keep_alive))
    }

    /// The MQTT protocol version.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// How long the TCP, TLS and MQTT handshakes together may take.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The user name sent in CONNECT, if any.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The file the password is read from when connecting, if one is set.
    pub fn password_file(&self) -> Option<&Path> {
        match &self.password {
            Some(Password::File(path)) => Some(path),
            _ => None,
        }
    }

    /// Whether the password is given inline (in the URL, the code or the
    /// config file) rather than read from a file.
    pub fn has_inline_password(&self) -> bool {
        matches!(self.password, Some(Password::Inline(_)))
    }

    /// The TLS settings (used by `mqtts://` and `wss://` only).
    pub fn tls(&self) -> &TlsOptions {
        &self.tls
    }

    /// The CONNECT clean-session flag.
    pub fn clean_session(&self) -> bool {
        self.clean_session
    }

    /// The reconnect backoff.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// How many connect handshakes may be in flight at once to the broker
    /// (0: unpaced).
    pub fn connect_concurrency(&self) -> usize {
        self.connect_concurrency
    }

    /// Turns on a round-trip probe over this connection (checked when the
    /// connection starts: the topic must be one a client may publish to).
    ///
    /// Defaults to none.
    #[must_use]
    pub fn with_probe(mut self, probe: ProbeOptions) -> Self {
        self.probe = Some(probe);
        self
    }

    /// The connection's round-trip probe, if any.
    pub fn probe(&self) -> Option<&ProbeOptions> {
        self.probe.as_ref()
    }

    /// The extra constant labels of this client's metrics.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// Validates everything and reads the files: the rumqttc options to connect with.
    pub(crate) fn to_mqtt_options(&self) -> Result<Settings, OptionsError> {
        self.check()?;
        let material = self.read_files()?;
        Ok(self.assemble(material))
    }

    /// [`to_mqtt_options`](Self::to_mqtt_options) with the files read on a
    /// blocking thread within [`READ_TIMEOUT`](super::files::READ_TIMEOUT)
    /// (none when there is no file to read): what async code (a reload, the
    /// daemon's start) prepares a connection with.
    #[cfg(feature = "daemon")]
    pub(crate) async fn prepare(&self) -> Result<Settings, OptionsError> {
        self.check()?;
        let material = if self.reads_no_file() {
            self.read_files()?
        } else {
            let options = self.clone();
            off_the_runtime(move || options.read_files()).await?
        };
        Ok(self.assemble(material))
    }

    /// A plain target with an inline password or none: preparing it opens no
    /// file (a TLS one reads the system's roots at least), so it needs no
    /// thread. Spawning one anyway cost `--config.check` of 10,000 such
    /// targets 10,000 thread spawns, seconds for nothing.
    #[cfg(feature = "daemon")]
    fn reads_no_file(&self) -> bool {
        self.password_file().is_none() && !self.broker.uses_tls()
    }

    /// [`to_mqtt_options`](Self::to_mqtt_options) with the files read on a
    /// thread of its own within [`READ_TIMEOUT`](super::files::READ_TIMEOUT)
    /// (no thread when there is none to read), for code without a runtime.
    #[cfg(feature = "daemon")]
    pub(crate) fn prepare_blocking(&self) -> Result<Settings, OptionsError> {
        self.check()?;
        let material = if self.reads_no_file() {
            self.read_files()?
        } else {
            let options = self.clone();
            on_a_thread(move || options.read_files())?
        };
        Ok(self.assemble(material))
    }

    /// Reads the password, CA, certificate and key files again into `mqtt`,
    /// off the runtime and within a time limit: the connection does this
    /// before every reconnect, so a rotated secret or certificate is used from
    /// the next attempt on. Nothing to do (and no thread used) when the options
    /// name no file. On an error `mqtt` keeps what it had.
    ///
    /// # Errors
    /// What reading or parsing a file reported (never the password itself).
    pub(crate) async fn reread_files(&self, mqtt: SettingsMut<'_>) -> Result<(), OptionsError> {
        let tls_files = self.broker.uses_tls() && self.tls.names_files();
        if self.password_file().is_none() && !tls_files {
            return Ok(());
        }
        let options = self.clone();
        let material = off_the_runtime(move || options.read_files()).await?;
        self.apply_material(mqtt, material);
        Ok(())
    }

    /// Every rule that needs no file.
    fn check(&self) -> Result<(), OptionsError> {
        check_keep_alive(self.keep_alive)?;
        if self.connect_timeout.is_zero() {
            return Err(OptionsError::ZeroTimeout("connect timeout"));
        }
        if self.ping_timeout().is_zero() {
            return Err(OptionsError::ZeroTimeout("ping timeout"));
        }
        for (name, value) in &self.labels {
            if let Some(problem) = label_name_problem(name).or_else(|| label_value_problem(value)) {
                return Err(OptionsError::Label {
                    name: name.clone(),
                    problem,
                });
            }
        }
        let client_id = self.client_id.as_str();
        if let Some((key, problem)) = self
            .probe
            .as_ref()
            .and_then(|p| p.problem_for(self.keep_alive, client_id))
        {
            return Err(OptionsError::Probe { key, problem });
        }
        if !self.broker.uses_tls() && !self.tls.is_default() {
            return Err(OptionsError::TlsOnPlainScheme(self.broker.scheme()));
        }
        #[cfg(not(feature = "websocket"))]
        if let Scheme::Ws | Scheme::Wss = self.broker.scheme {
            // `BrokerUrl` refuses ws:// and wss:// in a build without WebSockets.
            return Err(OptionsError::NoWebSocket(self.broker.scheme()));
        }
        Ok(())
    }

    /// What the files hold: the password and the TLS configuration.
    fn read_files(&self) -> Result<Material, OptionsError> {
        let password = match (&self.username, &self.password) {
            (None, _) | (_, None) => None,
            (Some(_), Some(Password::Inline(password))) => Some(password.clone()),
            (Some(_), Some(Password::File(path))) => Some(read_password(path)?),
        };
        let tls = if self.broker.uses_tls() {
            Some(self.tls.client_config_recording(&self.chain_expiry)?)
        } else {
            None
        };
        Ok(Material { password, tls })
    }

    /// The rumqttc options of checked settings and read files.
    fn assemble(&self, material: Material) -> Settings {
        let BrokerUrl {
            url,
            scheme,
            host,
            port,
        } = &self.broker;
        let broker_addr = match scheme {
            // rumqttc takes the whole URL as the address of a websocket broker.
            Scheme::Ws | Scheme::Wss => url.to_string(),
            Scheme::Mqtt | Scheme::Mqtts => host.clone(),
        };
        let mut settings = match self.protocol {
            Protocol::V311 => {
                let mut options = MqttOptions::new(self.client_id.as_str(), broker_addr, *port);
                options.set_keep_alive(self.keep_alive);
                options.set_clean_session(self.clean_session);
                options.set_inflight(self.max_inflight);
                options.set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE);
                Settings::V311(Box::new(options))
            }
            Protocol::V5 => Settings::V5(Box::new(wire::v5::options(
                self.client_id.as_str(),
                broker_addr,
                *port,
                self.keep_alive,
                self.clean_session,
                self.max_inflight,
                MAX_PACKET_SIZE as u32,
            ))),
        };
        self.apply_material(settings.as_mut(), material);
        settings
    }

    /// Puts the transport and the credentials into `options`.
    fn apply_material(&self, options: SettingsMut<'_>, material: Material) {
        let transport = match (self.broker.scheme, material.tls) {
            (Scheme::Mqtts, Some(tls)) => Transport::Tls(TlsConfiguration::Rustls(tls)),
            #[cfg(feature = "websocket")]
            (Scheme::Ws, _) => Transport::Ws,
            #[cfg(feature = "websocket")]
            (Scheme::Wss, Some(tls)) => Transport::Wss(TlsConfiguration::Rustls(tls)),
            // `check` refused ws:// and wss:// without WebSockets; read_files
            // built a TLS configuration for every TLS scheme.
            _ => Transport::Tcp,
        };
        let login = self
            .username
            .as_ref()
            .map(|username| (username.clone(), material.password.unwrap_or_default()));
        options.set_transport_and_login(transport, login);
    }
}

/// What a connection's files hold, read for one connect attempt.
struct Material {
    password: Option<String>,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for ConnectionOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionOptions")
            .field("client_id", &self.client_id)
            .field("url", &self.broker.url.as_str())
            .field("keep_alive", &self.keep_alive)
            .field("ping_timeout", &self.ping_timeout())
            .field("connect_timeout", &self.connect_timeout)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("tls", &self.tls)
            .field("clean_session", &self.clean_session)
            .field("backoff", &self.backoff)
            .field("connect_concurrency", &self.connect_concurrency)
            .field("labels", &self.labels)
            .field("probe", &self.probe)
            .field("protocol", &self.protocol)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_labels_are_checked_by_name_and_value_length() {
        let options = |name: &str, value: String| {
            ConnectionOptions::new(ClientId::from("c"), "mqtt://127.0.0.1")
                .unwrap()
                .with_labels([(name.to_owned(), value)])
                .to_mqtt_options()
        };
        assert!(options("site", "v".repeat(1024)).is_ok());
        let error = options("site", "v".repeat(1025)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid label \"site\": label values are at most 1024 bytes long"
        );
        let error = options("client_id", "v".into()).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("invalid label \"client_id\": ")
        );
        assert!(options(&"n".repeat(129), "v".into()).is_err());
    }

    #[test]
    fn rejects_bad_urls_with_a_clear_error() {
        let err = |url| ConnectionOptions::new("c", url).unwrap_err().to_string();
        assert!(err("http://broker.example").contains("unsupported broker URL scheme \"http\""));
        assert!(err("not a url").contains("invalid broker URL"));
        assert!(err("mqtt://").contains("no host") || err("mqtt://").contains("invalid"));
        assert_eq!(
            ConnectionOptions::new("", "mqtt://h")
                .unwrap_err()
                .to_string(),
            "the client id is empty"
        );
    }

    #[test]
    fn keep_alive_must_be_whole_seconds_in_range() {
        let with = |d| {
            ConnectionOptions::new("c", "mqtt://h")
                .unwrap()
                .with_keep_alive(d)
                .to_mqtt_options()
        };
        assert!(with(Duration::from_secs(1)).is_ok());
        assert!(with(Duration::from_secs(65_535)).is_ok());
        for bad in [
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_millis(1500),
            Duration::from_secs(65_536),
        ] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.starts_with("keep-alive must be whole seconds"), "{err}");
        }
    }

    #[test]
    fn credentials_from_the_url_are_decoded_and_kept_out_of_debug() {
        let options = ConnectionOptions::new("c", "mqtt://probe:p%40ss@h:1883").unwrap();
        let login = options.to_mqtt_options().unwrap().login();
        assert_eq!(login, Some(("probe".into(), "p@ss".into())));
        let debug = format!("{options:?}");
        for secret in ["p%40ss", "p@ss"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    #[test]
    fn password_file_is_read_at_start_without_its_newline() {
        let path = std::env::temp_dir().join(format!("mqtt-pulse-pw-{}", std::process::id()));
        std::fs::write(&path, "hunter2\n").unwrap();
        let mqtt = ConnectionOptions::new("c", "mqtt://h")
            .unwrap()
            .with_password_file("probe", &path)
            .to_mqtt_options()
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(mqtt.login(), Some(("probe".into(), "hunter2".into())));
    }

    #[test]
    fn a_missing_password_file_names_the_file() {
        let err = ConnectionOptions::new("c", "mqtt://h")
            .unwrap()
            .with_password_file("probe", "/nonexistent/pw")
            .to_mqtt_options()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot read the password file /nonexistent/pw"),
            "{err}"
        );
    }

    /// The error of starting `url` with a CA file that does not exist.
    fn with_missing_ca_file(url: &str) -> OptionsError {
        let tls = TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let options = ConnectionOptions::new("c", url).unwrap().with_tls(tls);
        options.to_mqtt_options().unwrap_err()
    }

    #[test]
    fn tls_settings_on_a_plain_url_are_an_error() {
        let err = with_missing_ca_file("mqtt://h");
        assert!(matches!(err, OptionsError::TlsOnPlainScheme("mqtt")));
        let err = with_missing_ca_file("ws://h/mqtt");
        assert!(matches!(err, OptionsError::TlsOnPlainScheme("ws")));
    }

    #[test]
    fn a_missing_ca_file_names_the_file() {
        for url in ["mqtts://h", "wss://h/mqtt"] {
            let err = with_missing_ca_file(url).to_string();
            assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        }
    }

    #[test]
    fn labels_are_checked_and_handed_to_the_hub_sorted() {
        let options = ConnectionOptions::new("c", "mqtt://h:1")
            .unwrap()
            .with_labels([("site", "north"), ("area", "b7")]);
        assert!(options.to_mqtt_options().is_ok());
        let info = options.client_info();
        assert_eq!(&*info.broker, "h:1");
        assert_eq!(
            &*info.labels,
            [
                ("area".to_owned(), "b7".to_owned()),
                ("site".to_owned(), "north".to_owned())
            ]
        );
        for bad in ["client_id", "__x", "1st", "a-b"] {
            let err = ConnectionOptions::new("c", "mqtt://h")
                .unwrap()
                .with_labels([(bad, "v")])
                .to_mqtt_options()
                .unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid label {bad:?}")),
                "{err}"
            );
        }
    }

    #[test]
    fn ping_timeout_defaults_to_half_the_keep_alive() {
        let options = ConnectionOptions::new("c", "mqtt://h")
            .unwrap()
            .with_keep_alive(Duration::from_secs(4));
        assert_eq!(options.ping_timeout(), Duration::from_secs(2));
        let options = options.with_ping_timeout(Duration::from_millis(300));
        assert_eq!(options.ping_timeout(), Duration::from_millis(300));
    }

    #[test]
    fn options_are_equal_when_every_setting_is_and_passwords_by_their_source() {
        let base = || ConnectionOptions::new("c", "mqtt://h").unwrap();
        assert_eq!(base(), base().with_keep_alive(DEFAULT_KEEP_ALIVE));
        assert_ne!(base(), base().with_keep_alive(Duration::from_secs(6)));
        let file = |path: &str| base().with_password_file("u", path);
        assert_eq!(file("/run/a"), file("/run/a"));
        assert_ne!(file("/run/a"), file("/run/b"));
        let inline = |password: &str| base().with_credentials("u", password);
        assert_eq!(inline("one"), inline("one"));
        assert_ne!(inline("one"), inline("two"));
        assert_ne!(inline("one"), file("one"));
        assert_eq!(
            format!("{:?}", inline("one").password),
            "Some(Inline(<redacted>))"
        );
    }

    #[test]
    fn the_password_source_is_shown_without_the_password() {
        let options = ConnectionOptions::new("c", "mqtt://h")
            .unwrap()
            .with_password_file("u", "/run/secrets/mqtt");
        assert_eq!(
            options.password_file(),
            Some(Path::new("/run/secrets/mqtt"))
        );
        assert!(!options.has_inline_password());
        let options = options.with_credentials("u", "s3cret");
        assert_eq!(options.password_file(), None);
        assert!(options.has_inline_password());
    }
}
