//! The two rumqttc event loops — MQTT 3.1.1 (`rumqttc`) and MQTT 5
//! (`rumqttc::v5`) — behind one face, so that the connection driver and its
//! sans-I/O bookkeeping (`link`, `keep_alive`, `tracker`, `streak`, `backoff`,
//! `pacing`) exist once for both versions.
//!
//! It owns the translation: each version's events become a [`Seen`], each
//! version's errors a [`Failure`] (a [`FailureReason`] and a detail for the
//! log), each version's options a [`Settings`]. It must never decide what
//! the driver decides — timers, backoff, what to report — and never block.
//!
//! The versions differ underneath in two things. rumqttc's own keep-alive
//! timer, which the driver replaces with its own schedule: the 3.1.1 loop
//! turns it off at a zero keep-alive, the v5 loop cannot (see [`v5`]). And
//! the memory of a connected loop: the 3.1.1 one polls rumqttc's large
//! `poll()` future only while connecting and runs a small select of its own
//! once connected ([`v311`]); the v5 loop keeps its network private, so it
//! polls rumqttc's `poll()` throughout, boxed. Nothing that is awaited here
//! holds a connect path inline: that would make every connection task as
//! large as the largest connect future.

mod pending;
pub(crate) mod v311;
pub(crate) mod v5;

pub(crate) use pending::Pending;

use std::time::Duration;

use rumqttc::{AsyncClient, ClientError, MqttOptions, QoS, Transport};

use super::link::Beat;
use crate::events::FailureReason;

/// The rumqttc options of one connection, for the version it speaks, with
/// its files read: what a connection starts from. Its `Debug` shows neither
/// (rumqttc's prints the password).
pub(crate) enum Settings {
    // Boxed, as they differ in size by half (352 and 656 bytes).
    V311(Box<MqttOptions>),
    V5(Box<rumqttc::v5::MqttOptions>),
}

/// A mutable view of [`Settings`], in place in a running event loop (to put
/// newly read files into it before a reconnect).
pub(crate) enum SettingsMut<'a> {
    V311(&'a mut MqttOptions),
    V5(&'a mut rumqttc::v5::MqttOptions),
}

impl SettingsMut<'_> {
    /// Sets the transport and, if there is a user name, the credentials.
    pub(crate) fn set_transport_and_login(
        self,
        transport: Transport,
        login: Option<(String, String)>,
    ) {
        match self {
            SettingsMut::V311(options) => {
                options.set_transport(transport);
                if let Some((username, password)) = login {
                    options.set_credentials(username, password);
                }
            }
            SettingsMut::V5(options) => {
                options.set_transport(transport);
                if let Some((username, password)) = login {
                    options.set_credentials(username, password);
                }
            }
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let version = match self {
            Settings::V311(_) => "V311",
            Settings::V5(_) => "V5",
        };
        f.debug_tuple("Settings")
            .field(&format_args!("{version}"))
            .finish_non_exhaustive()
    }
}

impl Settings {
    pub(crate) fn as_mut(&mut self) -> SettingsMut<'_> {
        match self {
            Settings::V311(options) => SettingsMut::V311(options),
            Settings::V5(options) => SettingsMut::V5(options),
        }
    }

    /// The user name and password the CONNECT carries, if any (tests).
    #[cfg(test)]
    pub(crate) fn login(&self) -> Option<(String, String)> {
        match self {
            Settings::V311(options) => options
                .credentials()
                .map(|login| (login.username, login.password)),
            Settings::V5(options) => options
                .credentials()
                .map(|login| (login.username, login.password)),
        }
    }
}

/// What the driver sees of one event either event loop yielded.
#[derive(Debug)]
pub(crate) enum Seen {
    /// The broker accepted the CONNECT.
    ConnAck {
        session_present: bool,
        /// MQTT 5's Server Keep Alive: the keep-alive the broker imposes
        /// instead of the one the CONNECT asked for.
        server_keep_alive: Option<Duration>,
    },
    /// A PINGREQ was written.
    PingReq,
    /// A PINGRESP was read.
    PingResp,
    /// A PUBLISH arrived (an MQTT 5 one as its 3.1.1 shape: topic, payload,
    /// QoS, flags; its properties are not kept).
    Publish(rumqttc::Publish),
    /// A PUBLISH was written (what round-trip probes and paths stamp).
    PublishWritten,
    /// A SUBSCRIBE was written, with its packet id.
    SubscribeWritten(u16),
    /// The broker answered a SUBSCRIBE (an MQTT 5 SUBACK in its 3.1.1 shape:
    /// each reason code a success with its QoS, or a failure).
    SubAck(rumqttc::SubAck),
    /// The DISCONNECT of a shutdown was written.
    Disconnect,
    /// Anything else.
    Other,
}

impl Seen {
    /// What the sans-I/O link makes of it.
    pub(crate) fn beat(&self) -> Beat {
        match self {
            Seen::ConnAck { .. } => Beat::Accepted,
            Seen::PingReq => Beat::PingWritten,
            Seen::PingResp => Beat::PingAnswered,
            _ => Beat::Other,
        }
    }
}

/// An error either event loop returned, classified.
#[derive(Debug)]
pub(crate) struct Failure {
    /// `None` for an error that is not a failure of the connection (every
    /// client handle dropped).
    pub(crate) reason: Option<FailureReason>,
    /// rumqttc's message, for the log.
    pub(crate) detail: String,
}

/// Room in rumqttc's request channel between the handle and the task.
const REQUEST_CAPACITY: usize = 64;

/// Makes the client handle and the event loop of `settings`: the loop's own
/// connect timeout (whole seconds) only backs up the driver's.
pub(crate) fn open(settings: Settings, connect_timeout: Duration) -> (Client, Wire) {
    let backstop = connect_timeout.as_secs() + 1;
    match settings {
        Settings::V311(options) => {
            let (client, mut wire) = v311::open(*options, REQUEST_CAPACITY);
            let eventloop = &mut wire.eventloop;
            // rumqttc preallocates room for 100 buffered events (14 KiB) per
            // connection; a probe rarely buffers more than a few, and the
            // queue grows on demand. This halves the memory of a connection
            // at 10k scale.
            eventloop.state.events = std::collections::VecDeque::new();
            let mut network = eventloop.network_options();
            network.set_connection_timeout(backstop);
            network.set_tcp_nodelay(true);
            eventloop.set_network_options(network);
            (Client::V311(client), Wire::V311(Box::new(wire)))
        }
        Settings::V5(mut options) => {
            options.set_request_channel_capacity(REQUEST_CAPACITY);
            options.set_connection_timeout(backstop);
            let mut network = options.network_options();
            network.set_connection_timeout(backstop);
            network.set_tcp_nodelay(true);
            options.set_network_options(network);
            let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(*options, REQUEST_CAPACITY);
            eventloop.state.events = std::collections::VecDeque::new();
            (Client::V5(client), Wire::V5(Box::new(eventloop)))
        }
    }
}

/// A connection's event loop, of either version.
pub(crate) enum Wire {
    // Both boxed: the loops differ in size by half (816 and 1,256 bytes),
    // and either way the driver holds one pointer.
    V311(Box<v311::Loop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

impl Wire {
    /// The next event, or the error that ended the connection or attempt.
    /// As cancel-safe as rumqttc's `poll` (which the driver relies on: its
    /// reads and request intake are, and a write it had begun stays in its
    /// buffer for the next flush).
    pub(crate) async fn poll(&mut self) -> Result<Seen, Failure> {
        match self {
            Wire::V311(wire) => match wire.poll().await {
                Ok(event) => Ok(v311::seen(event)),
                Err(error) => Err(v311::failure(&error)),
            },
            // Boxed: inline, its connect path would size the task of every
            // connection, 3.1.1 ones included (module doc). One allocation
            // per poll, from the allocator's thread cache.
            Wire::V5(eventloop) => match Box::pin(eventloop.poll()).await {
                Ok(event) => Ok(v5::seen(event)),
                Err(error) => Err(v5::failure(&error)),
            },
        }
    }

    /// A second look at a failed handshake: for MQTT 5, a broker that
    /// closed the CONNECT but answers a 3.1.1 one does not speak MQTT 5, and
    /// the failure becomes `protocol_version` (see [`v5`]). Anything else
    /// is returned as it is.
    pub(crate) async fn second_opinion(&mut self, failure: Failure, limit: Duration) -> Failure {
        // A copy of the options: the event loop is not `Sync`, so no borrow
        // of it may be held across the await.
        let options = match self {
            Wire::V5(eventloop) if v5::may_be_311_only(failure.reason) => eventloop.options.clone(),
            _ => return failure,
        };
        // Boxed: it runs a 3.1.1 loop's connect path (module doc).
        if !Box::pin(v5::answers_311(&options, limit)).await {
            return failure;
        }
        Failure {
            reason: Some(FailureReason::ProtocolVersion),
            detail: format!(
                "{}; the broker answers an MQTT 3.1.1 CONNECT: it does not speak MQTT 5 \
                 (set the target's protocol to \"3.1.1\")",
                failure.detail
            ),
        }
    }

    /// The keep-alive the next CONNECT announces.
    pub(crate) fn announce_keep_alive(&mut self, keep_alive: Duration) {
        match self {
            Wire::V311(wire) => {
                wire.eventloop.mqtt_options.set_keep_alive(keep_alive);
            }
            Wire::V5(eventloop) => {
                eventloop.options.set_keep_alive(v5::announced(keep_alive));
            }
        }
    }

    /// The broker accepted the CONNECT: from now on the driver sends the
    /// PINGREQs, so rumqttc's own timer is turned off (3.1.1) or pushed out
    /// of reach (5).
    pub(crate) fn connected(&mut self) {
        match self {
            Wire::V311(wire) => {
                // Zero turns rumqttc's keep-alive timer off (the steady
                // state has none: see `v311`).
                wire.eventloop.mqtt_options.set_keep_alive(Duration::ZERO);
            }
            Wire::V5(eventloop) => {
                eventloop.options.set_keep_alive(v5::QUIET_TIMER);
            }
        }
    }

    /// The queue of requests the next polls write ahead of the client
    /// handle's: where round-trip probes and paths put theirs.
    pub(crate) fn pending(&mut self) -> &mut dyn Pending {
        match self {
            Wire::V311(wire) => &mut wire.eventloop.pending,
            Wire::V5(eventloop) => &mut eventloop.pending,
        }
    }

    /// Queues a PINGREQ; the next poll writes it and yields [`Seen::PingReq`].
    pub(crate) fn request_ping(&mut self) {
        match self {
            Wire::V311(wire) => wire
                .eventloop
                .pending
                .push_back(rumqttc::Request::PingReq(rumqttc::PingReq)),
            Wire::V5(eventloop) => eventloop.pending.push_back(rumqttc::v5::Request::PingReq),
        }
    }

    /// Drops the socket (if any), so the next poll reconnects from scratch.
    pub(crate) fn clean(&mut self) {
        match self {
            Wire::V311(wire) => wire.clean(),
            Wire::V5(eventloop) => eventloop.clean(),
        }
    }

    /// The options the next connect uses, to put newly read files into.
    pub(crate) fn settings_mut(&mut self) -> SettingsMut<'_> {
        match self {
            Wire::V311(wire) => SettingsMut::V311(&mut wire.eventloop.mqtt_options),
            Wire::V5(eventloop) => SettingsMut::V5(&mut eventloop.options),
        }
    }
}

/// The handle half of a connection: what publishes, subscribes and asks for
/// the DISCONNECT of a shutdown.
#[derive(Clone, Debug)]
pub(crate) enum Client {
    V311(AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl Client {
    /// Subscribes to `topic`.
    ///
    /// # Errors
    /// The event loop is gone. For an MQTT 5 connection the error carries
    /// the 3.1.1 form of the request that could not be sent.
    pub(crate) async fn subscribe(&self, topic: String, qos: QoS) -> Result<(), ClientError> {
        match self {
            Client::V311(client) => client.subscribe(topic, qos).await,
            Client::V5(client) => {
                client
                    .subscribe(topic.clone(), v5::qos(qos))
                    .await
                    .map_err(|_| {
                        ClientError::Request(rumqttc::Request::Subscribe(rumqttc::Subscribe::new(
                            topic, qos,
                        )))
                    })
            }
        }
    }

    /// Asks for these subscriptions without waiting for room in the
    /// request channel.
    pub(crate) fn try_subscribe_many(&self, topics: Vec<(String, QoS)>) -> Result<(), String> {
        match self {
            Client::V311(client) => client
                .try_subscribe_many(
                    topics
                        .into_iter()
                        .map(|(topic, qos)| rumqttc::SubscribeFilter::new(topic, qos)),
                )
                .map_err(|error| error.to_string()),
            Client::V5(client) => client
                .try_subscribe_many(topics.into_iter().map(|(topic, qos)| {
                    rumqttc::v5::mqttbytes::v5::Filter::new(topic, v5::qos(qos))
                }))
                .map_err(|error| error.to_string()),
        }
    }

    /// Asks for a DISCONNECT without waiting; `false` if it could not be queued.
    pub(crate) fn try_disconnect(&self) -> bool {
        match self {
            Client::V311(client) => client.try_disconnect().is_ok(),
            Client::V5(client) => client.try_disconnect().is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of_val;
    use std::time::Duration;

    use super::Failure;
    use crate::connection::{ConnectionOptions, Protocol};

    /// Each connection's task awaits these, inline: none may hold a connect
    /// path (rumqttc's is ~14.5 KiB), or every task is as large as the
    /// largest (module doc). Sizes, not times: the same on every machine.
    #[test]
    fn what_a_connection_task_awaits_holds_no_connect_path_inline() {
        for protocol in [Protocol::V311, Protocol::V5] {
            let settings = ConnectionOptions::new("c", "mqtt://127.0.0.1:1")
                .unwrap()
                .with_protocol(protocol)
                .to_mqtt_options()
                .unwrap();
            let (_client, mut wire) = super::open(settings, Duration::from_secs(1));
            let poll = size_of_val(&wire.poll());
            let failure = Failure {
                reason: None,
                detail: String::new(),
            };
            let second_opinion = size_of_val(&wire.second_opinion(failure, Duration::from_secs(1)));
            eprintln!("{protocol:?}: poll {poll} bytes, second opinion {second_opinion} bytes");
            assert!(poll <= 2048, "{protocol:?}: a poll of {poll} bytes");
            assert!(
                second_opinion <= 2048,
                "{protocol:?}: a second opinion of {second_opinion} bytes"
            );
        }
    }

    #[test]
    fn settings_never_show_the_password_they_carry() {
        for protocol in [Protocol::V311, Protocol::V5] {
            let settings = ConnectionOptions::new("c", "mqtt://h")
                .unwrap()
                .with_protocol(protocol)
                .with_credentials("probe", "s3cret-horse")
                .to_mqtt_options()
                .unwrap();
            assert_eq!(
                settings.login(),
                Some(("probe".to_owned(), "s3cret-horse".to_owned()))
            );
            let debug = format!("{settings:?}");
            assert!(!debug.contains("s3cret"), "{debug}");
        }
    }
}
