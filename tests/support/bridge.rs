//! [`Bridged`]: two private Mosquitto brokers joined by a real Mosquitto bridge —
//! the `connection` / `address` / `topic` lines in the config of one of them
//! (the *bridging* broker), which connects to the other (the *remote*) as an
//! MQTT client and forwards the bridged topics both ways.
//!
//! What it guarantees: [`BridgeBuilder::start`] and [`Bridged::restore_bridge`]
//! return only once the bridge is connected and subscribed on the remote —
//! the bridging broker has logged `Received SUBACK from local.<bridge id>`,
//! which it does after the remote's CONNACK and the SUBACK of the bridge's
//! subscription, so a message published on either broker from then on crosses.
//! [`Bridged::remove_bridge`] restarts the bridging broker without its bridge
//! lines and returns once the remote has logged the bridge connection's end,
//! so from then on nothing crosses. No sleeps: each wait is for a log line.
//!
//! Mosquitto's bridge defaults apply unless the builder says otherwise
//! (`cleansession false`: the remote keeps the bridge's session and queues
//! QoS 1 and 2 messages for it while the bridge is away, and delivers them
//! when it comes back; the bridge announces itself as a bridge, so the remote
//! does not echo its own messages back). `restart_timeout 1` makes the bridge
//! reconnect within a second after the *remote* restarts.

use std::time::Duration;

use super::{Broker, BrokerBuilder, random_u64, wait_until};

/// How long the bridge may take to connect or to go away.
const BRIDGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Configures a [`Bridged`] pair before starting it.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct BridgeBuilder {
    topics: Vec<String>,
    clean_session: Option<bool>,
}

impl BridgeBuilder {
    /// A bridge `topic` line without the keyword: `"pattern direction qos"`, for
    /// example `"mqtt-pulse/# both 1"` (the default when none is given) or
    /// `"mqtt-pulse/path/a/# out 1"`. Calls add up. At least one line should
    /// bridge `in` or `both`: the readiness wait needs the bridge's SUBSCRIBE.
    pub fn topic(mut self, line: &str) -> Self {
        self.topics.push(line.to_owned());
        self
    }

    /// The bridge's `cleansession` (Mosquitto's default, when not called: `false`).
    pub fn clean_session(mut self, clean: bool) -> Self {
        self.clean_session = Some(clean);
        self
    }

    /// Starts the remote broker, then the bridging broker with the bridge lines,
    /// and waits until the bridge is connected and subscribed. Panics with both
    /// logs if it does not connect within 10 s.
    pub fn start(self) -> Bridged {
        let remote = Broker::start();
        let id = format!("pulse-bridge-{:08x}", random_u64() as u32);
        let mut lines = format!(
            "# bridge to the remote broker (tests/support/bridge.rs)\n\
             connection {id}\n\
             address {}\n\
             remote_clientid {id}\n\
             restart_timeout 1\n",
            remote.addr()
        );
        if let Some(clean) = self.clean_session {
            lines.push_str(&format!("cleansession {clean}\n"));
        }
        let topics = if self.topics.is_empty() {
            vec!["mqtt-pulse/# both 1".to_owned()]
        } else {
            self.topics
        };
        for topic in &topics {
            lines.push_str(&format!("topic {topic}\n"));
        }
        // The bridge lines come last: everything after `connection` belongs to
        // the bridge, so the listener block must come before it.
        let bridging = BrokerBuilder::default().extra_config(&lines).start();
        let with_bridge = bridging.config();
        let without_bridge = with_bridge.replacen(&lines, "", 1);
        assert_ne!(
            with_bridge, without_bridge,
            "the bridge lines are in the config"
        );
        let bridged = Bridged {
            remote,
            bridging,
            id,
            with_bridge,
            without_bridge,
        };
        bridged.await_bridge(0);
        bridged
    }
}

/// Two private brokers and a real Mosquitto bridge between them. See the module
/// docs. Dropping it kills both brokers.
#[derive(Debug)]
pub struct Bridged {
    /// The broker the bridge connects to (no bridge lines of its own).
    pub remote: Broker,
    /// The broker whose config holds the bridge lines.
    pub bridging: Broker,
    id: String,
    with_bridge: String,
    without_bridge: String,
}

impl Bridged {
    /// Two brokers bridging `mqtt-pulse/#` both ways at QoS 1, with
    /// Mosquitto's bridge defaults.
    pub fn start() -> Bridged {
        Bridged::builder().start()
    }

    pub fn builder() -> BridgeBuilder {
        BridgeBuilder::default()
    }

    /// The bridge's client id on the remote broker.
    pub fn bridge_client_id(&self) -> &str {
        &self.id
    }

    /// Restarts the bridging broker without its bridge lines (same port, same
    /// log) and returns once the remote has seen the bridge connection end.
    /// Clients of the bridging broker are disconnected by the restart, as by
    /// any broker restart.
    pub fn remove_bridge(&self) {
        let mark = self.remote.log_mark();
        self.bridging.restart_with_config(&self.without_bridge);
        let closed = format!("Client {} closed its connection", self.id);
        let socket_error = format!("Socket error on client {}", self.id);
        let gone = wait_until(BRIDGE_TIMEOUT, || {
            let log = self.remote.log_since(mark);
            log.contains(&closed) || log.contains(&socket_error)
        });
        assert!(
            gone,
            "the remote broker did not see bridge {} go within {BRIDGE_TIMEOUT:?}; its log:\n{}",
            self.id,
            self.remote.log_since(mark)
        );
    }

    /// Restarts the bridging broker with its bridge lines and waits until the
    /// bridge is connected and subscribed again.
    pub fn restore_bridge(&self) {
        let mark = self.bridging.log_mark();
        self.bridging.restart_with_config(&self.with_bridge);
        self.await_bridge(mark);
    }

    /// Waits until the bridging broker has logged, after log position `mark`,
    /// the SUBACK that completes the bridge's connect: for a test that
    /// restarted the remote broker and waits for the bridge to reconnect.
    pub fn await_bridge(&self, mark: usize) {
        let subscribed = format!("Received SUBACK from local.{}", self.id);
        let connected = wait_until(BRIDGE_TIMEOUT, || {
            self.bridging.log_since(mark).contains(&subscribed)
        });
        assert!(
            connected,
            "bridge {} did not connect within {BRIDGE_TIMEOUT:?}\n--- bridging broker ---\n{}\n\
             --- remote broker ---\n{}",
            self.id,
            self.bridging.log_since(mark),
            self.remote.log()
        );
    }
}
