//! MQTT 5 (`rumqttc::v5`) in the driver's vocabulary: events, errors and
//! reason codes, options, and the work-arounds its event loop needs.
//!
//! # Reason codes
//!
//! A CONNACK that refuses the CONNECT and a DISCONNECT the broker sends
//! carry a reason code; [`connack_reason`] and [`disconnect_reason`] name
//! the [`FailureReason`] of each, reusing the 3.1.1 reason where the code
//! means the same (0x86 is `bad_credentials` as 3.1.1's return code 4 is).
//!
//! # rumqttc's keep-alive timer
//!
//! The driver sends its own PINGREQs (`keep_alive.rs`). The 3.1.1 event loop
//! turns its timer off at a zero keep-alive; the v5 one has no off switch: it
//! arms a timer of `MqttOptions::keep_alive` at each connect, re-arms it with
//! the same value whenever it fires, and `set_keep_alive` refuses anything
//! under 5 s. Its CONNECT carries that keep-alive as `as_secs() as u16`, so
//! [`announced`] asks for the keep-alive plus 2^16 s: the CONNECT's 16-bit
//! field carries exactly the configured keep-alive (1 s works as in 3.1.1)
//! while the timer lies 18 hours away; once connected the driver sets
//! [`QUIET_TIMER`] so a re-armed timer stays out of reach too. A broker's
//! Server Keep Alive replaces the timer's value at CONNACK (rumqttc does
//! that), so with one the timer fires once, a Server Keep Alive after
//! CONNACK, and writes a PINGREQ of its own, measured like the driver's;
//! `tests/mqtt5.rs` checks on a real broker that the CONNECT says what we
//! mean.
//!
//! # A broker that does not speak MQTT 5
//!
//! A 3.1.1 broker answers a v5 CONNECT with a 3.1.1 CONNACK (return code 1)
//! and closes, or just closes. rumqttc's v5 decoder cannot read a 3.1.1
//! CONNACK (it has no properties) and waits for more bytes until the close,
//! so all the driver sees is "closed by the broker" during the handshake.
//! [`answers_311`] then asks the broker once in 3.1.1 with the same
//! transport, client id and credentials; if it answers with any CONNACK, the
//! failure is `protocol_version`, with a detail that says what to change.

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, DisconnectReasonCode, Packet};
use rumqttc::v5::mqttbytes::{self, QoS as QoS5};
use rumqttc::v5::{ConnectionError, Event, StateError};
use rumqttc::{Outgoing, QoS};

use super::{Failure, Seen};
use crate::connection::link::Beat;
use crate::connection::link::classify_io;
use crate::events::FailureReason;

/// Added to the keep-alive rumqttc's v5 options are given, so the CONNECT's
/// 16-bit keep-alive is the configured one and the loop's own timer is out
/// of reach (module doc).
const OUT_OF_REACH: Duration = Duration::from_secs(1 << 16);

/// The v5 loop's timer value while connected: out of reach (module doc).
pub(crate) const QUIET_TIMER: Duration = OUT_OF_REACH;

/// What `MqttOptions::set_keep_alive` is given for a CONNECT announcing
/// `keep_alive` (whole seconds, at most 65,535: `check_keep_alive`).
pub(crate) fn announced(keep_alive: Duration) -> Duration {
    keep_alive + OUT_OF_REACH
}

/// The keep-alive a CONNECT made from `options` announces.
fn announced_by(options: &rumqttc::v5::MqttOptions) -> Duration {
    // The same truncation rumqttc's CONNECT applies (module doc).
    Duration::from_secs(u64::from(options.keep_alive().as_secs() as u16))
}

/// The v5 options of a connection: the 3.1.1 ones' counterparts.
pub(crate) fn options(
    client_id: &str,
    broker_addr: String,
    port: u16,
    keep_alive: Duration,
    clean_session: bool,
    max_inflight: u16,
    max_packet_size: u32,
) -> rumqttc::v5::MqttOptions {
    let mut options = rumqttc::v5::MqttOptions::new(client_id, broker_addr, port);
    options.set_keep_alive(announced(keep_alive));
    options.set_clean_start(clean_session);
    if !clean_session {
        // 3.1.1's persistent session lasts until the next clean connect;
        // MQTT 5 says so with the longest session expiry.
        options.set_session_expiry_interval(Some(u32::MAX));
    }
    options.set_outgoing_inflight_upper_limit(max_inflight);
    // Announced in CONNECT: the broker sends nothing larger (and rumqttc's
    // v5 default without it is 10 KiB).
    options.set_max_packet_size(Some(max_packet_size));
    options
}

/// The 3.1.1 QoS as MQTT 5 spells it.
pub(super) fn qos(qos: QoS) -> QoS5 {
    match qos {
        QoS::AtMostOnce => QoS5::AtMostOnce,
        QoS::AtLeastOnce => QoS5::AtLeastOnce,
        QoS::ExactlyOnce => QoS5::ExactlyOnce,
    }
}

fn qos_311(qos: QoS5) -> QoS {
    match qos {
        QoS5::AtMostOnce => QoS::AtMostOnce,
        QoS5::AtLeastOnce => QoS::AtLeastOnce,
        QoS5::ExactlyOnce => QoS::ExactlyOnce,
    }
}

pub(crate) fn seen(event: Event) -> Seen {
    match event {
        Event::Incoming(Packet::ConnAck(connack)) => Seen::ConnAck {
            session_present: connack.session_present,
            server_keep_alive: connack
                .properties
                .and_then(|properties| properties.server_keep_alive)
                .map(|seconds| Duration::from_secs(seconds.into())),
        },
        Event::Outgoing(Outgoing::PingReq) => Seen::PingReq,
        Event::Incoming(Packet::PingResp(_)) => Seen::PingResp,
        Event::Incoming(Packet::Publish(publish)) => {
            // MQTT 5 topics are UTF-8 (rumqttc checks); no topic alias can
            // arrive, as the CONNECT allows none.
            let topic = String::from_utf8_lossy(&publish.topic).into_owned();
            let mut shaped = rumqttc::Publish::new(topic, qos_311(publish.qos), publish.payload);
            shaped.dup = publish.dup;
            shaped.retain = publish.retain;
            shaped.pkid = publish.pkid;
            Seen::Publish(shaped)
        }
        Event::Outgoing(Outgoing::Publish(_)) => Seen::PublishWritten,
        Event::Outgoing(Outgoing::Subscribe(pkid)) => Seen::SubscribeWritten(pkid),
        Event::Incoming(Packet::SubAck(ack)) => Seen::SubAck(rumqttc::SubAck {
            pkid: ack.pkid,
            return_codes: ack
                .return_codes
                .iter()
                .map(|code| match code {
                    rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(qos) => {
                        rumqttc::SubscribeReasonCode::Success(qos_311(*qos))
                    }
                    _ => rumqttc::SubscribeReasonCode::Failure,
                })
                .collect(),
        }),
        Event::Outgoing(Outgoing::Disconnect) => Seen::Disconnect,
        _ => Seen::Other,
    }
}

/// What the sans-I/O link makes of an event of a host's own v5 loop.
pub(crate) fn beat(event: &Event) -> Beat {
    match event {
        Event::Incoming(Packet::ConnAck(_)) => Beat::Accepted,
        Event::Outgoing(Outgoing::PingReq) => Beat::PingWritten,
        Event::Incoming(Packet::PingResp(_)) => Beat::PingAnswered,
        _ => Beat::Other,
    }
}

/// For a CONNACK (which accepted the CONNECT: rumqttc makes a refusal an
/// error), the Server Keep Alive it carries, if any; `None` for any other
/// event.
pub(crate) fn accepted_keep_alive(event: &Event) -> Option<Option<Duration>> {
    match event {
        Event::Incoming(Packet::ConnAck(connack)) => Some(
            connack
                .properties
                .as_ref()
                .and_then(|properties| properties.server_keep_alive)
                .map(|seconds| Duration::from_secs(seconds.into())),
        ),
        _ => None,
    }
}

pub(super) fn failure(error: &ConnectionError) -> Failure {
    let detail = match error {
        // The broker's own words, but only so many of them: a reason string
        // may be as long as a packet (256 KiB), and it goes into a log line.
        ConnectionError::MqttState(StateError::ServerDisconnect {
            reason_code,
            reason_string,
        }) => match reason_string {
            Some(text) => format!(
                "the broker sent DISCONNECT {reason_code:?}: {:?}",
                clip(text, MAX_REASON_STRING_CHARS)
            ),
            None => format!("the broker sent DISCONNECT {reason_code:?}"),
        },
        _ => error.to_string(),
    };
    Failure {
        reason: classify(error),
        detail,
    }
}

/// How much of a broker's reason string a log line carries.
const MAX_REASON_STRING_CHARS: usize = 200;

/// At most `limit` characters of `text`, with `…` when cut.
fn clip(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Why a v5 connection attempt failed or a v5 connection was lost; `None`
/// for errors that are not failures of the connection.
pub(crate) fn classify(error: &ConnectionError) -> Option<FailureReason> {
    Some(match error {
        ConnectionError::Io(e) => classify_io(e),
        ConnectionError::MqttState(state) => match state {
            StateError::Io(e) => classify_io(e),
            StateError::Deserialization(mqttbytes::Error::Io(e)) => classify_io(e),
            StateError::AwaitPingResp => FailureReason::PingTimeout,
            StateError::ConnectionAborted => FailureReason::ClosedByBroker,
            StateError::ServerDisconnect { reason_code, .. } => disconnect_reason(*reason_code),
            StateError::ConnFail { reason } => connack_reason(*reason),
            _ => FailureReason::Protocol,
        },
        ConnectionError::Timeout(_) => FailureReason::Timeout,
        ConnectionError::Tls(_) => FailureReason::Tls,
        ConnectionError::ConnectionRefused(code) => connack_reason(*code),
        ConnectionError::NotConnAck(_) => FailureReason::Protocol,
        ConnectionError::RequestsDone => return None,
        #[cfg(feature = "websocket")]
        ConnectionError::Websocket(e) => match std::error::Error::source(e) {
            Some(source) => match source.downcast_ref::<std::io::Error>() {
                Some(e) => classify_io(e),
                None => FailureReason::Protocol,
            },
            None => FailureReason::Protocol,
        },
        // As for 3.1.1 (`link::classify`): rumqttc's WebSocket variants,
        // present whenever any crate turns its `websocket` feature on.
        #[allow(unreachable_patterns)]
        _ => FailureReason::Protocol,
    })
}

/// The reason of a CONNACK that refused the CONNECT.
pub(crate) fn connack_reason(code: ConnectReturnCode) -> FailureReason {
    use ConnectReturnCode as C;
    use FailureReason as R;
    match code {
        C::UnsupportedProtocolVersion | C::RefusedProtocolVersion => R::ProtocolVersion,
        C::ClientIdentifierNotValid | C::BadClientId => R::IdentifierRejected,
        C::BadUserNamePassword => R::BadCredentials,
        C::NotAuthorized => R::NotAuthorized,
        C::ServerUnavailable | C::ServiceUnavailable => R::ServerUnavailable,
        C::ServerBusy => R::ServerBusy,
        C::Banned => R::Banned,
        C::BadAuthenticationMethod => R::BadAuthenticationMethod,
        C::PacketTooLarge => R::PacketTooLarge,
        C::QuotaExceeded => R::QuotaExceeded,
        C::UseAnotherServer => R::UseAnotherServer,
        C::ServerMoved => R::ServerMoved,
        C::ConnectionRateExceeded => R::ConnectionRateExceeded,
        C::UnspecifiedError => R::UnspecifiedError,
        C::ImplementationSpecificError => R::ImplementationSpecificError,
        // About our CONNECT (its will, which we never send, or its form),
        // or a refusal that says success.
        C::MalformedPacket
        | C::ProtocolError
        | C::TopicNameInvalid
        | C::PayloadFormatInvalid
        | C::RetainNotSupported
        | C::QoSNotSupported
        | C::Success => R::Protocol,
    }
}

/// The reason of a DISCONNECT the broker sent.
pub(crate) fn disconnect_reason(code: DisconnectReasonCode) -> FailureReason {
    use DisconnectReasonCode as D;
    use FailureReason as R;
    match code {
        D::NormalDisconnection | D::DisconnectWithWillMessage => R::ClosedByBroker,
        D::SessionTakenOver => R::SessionTakenOver,
        D::ServerShuttingDown => R::ServerShuttingDown,
        D::KeepAliveTimeout => R::KeepAliveTimeout,
        D::AdministrativeAction => R::AdministrativeAction,
        D::NotAuthorized => R::NotAuthorized,
        D::ServerBusy => R::ServerBusy,
        D::PacketTooLarge => R::PacketTooLarge,
        D::MessageRateTooHigh => R::MessageRateTooHigh,
        D::QuotaExceeded => R::QuotaExceeded,
        D::UseAnotherServer => R::UseAnotherServer,
        D::ServerMoved => R::ServerMoved,
        D::ConnectionRateExceeded => R::ConnectionRateExceeded,
        D::MaximumConnectTime => R::MaximumConnectTime,
        D::UnspecifiedError => R::UnspecifiedError,
        D::ImplementationSpecificError => R::ImplementationSpecificError,
        // About something we sent.
        D::MalformedPacket
        | D::ProtocolError
        | D::TopicFilterInvalid
        | D::TopicNameInvalid
        | D::ReceiveMaximumExceeded
        | D::TopicAliasInvalid
        | D::PayloadFormatInvalid
        | D::RetainNotSupported
        | D::QoSNotSupported
        | D::SharedSubscriptionNotSupported
        | D::SubscriptionIdentifiersNotSupported
        | D::WildcardSubscriptionsNotSupported => R::Protocol,
    }
}

/// Whether a v5 handshake that ended this way may have met a broker that
/// does not speak MQTT 5 (module doc): closed before any CONNACK, or sent
/// something a v5 decoder could not read.
pub(super) fn may_be_311_only(reason: Option<FailureReason>) -> bool {
    matches!(
        reason,
        Some(FailureReason::ClosedByBroker | FailureReason::Protocol)
    )
}

/// Whether the broker of `options` answers a 3.1.1 CONNECT with the same
/// transport, client id and credentials with a CONNACK (accepting or
/// refusing it) within `limit`. An accepted connection is closed at once.
pub(super) async fn answers_311(options: &rumqttc::v5::MqttOptions, limit: Duration) -> bool {
    let (host, port) = options.broker_address();
    let mut asked = rumqttc::MqttOptions::new(options.client_id(), host, port);
    asked.set_transport(options.transport());
    asked.set_keep_alive(announced_by(options));
    asked.set_clean_session(options.clean_start());
    if let Some(login) = options.credentials() {
        asked.set_credentials(login.username, login.password);
    }
    let mut eventloop = rumqttc::EventLoop::new(asked, 1);
    let mut network = eventloop.network_options();
    network.set_connection_timeout(limit.as_secs() + 1);
    eventloop.set_network_options(network);
    let answered = tokio::time::timeout(limit, eventloop.poll()).await;
    matches!(
        answered,
        Ok(Ok(_) | Err(rumqttc::ConnectionError::ConnectionRefused(_)))
    )
    // Dropping the loop closes the socket; a 3.1.1 session it may have
    // opened ends with it (no will is set).
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v5_suback_reads_as_its_3_1_1_shape_every_refusal_a_failure() {
        use rumqttc::SubscribeReasonCode as Code;
        use rumqttc::v5::mqttbytes::v5::{SubAck, SubscribeReasonCode as Code5};
        let suback = SubAck {
            pkid: 9,
            return_codes: vec![
                Code5::Success(QoS5::AtLeastOnce),
                Code5::NotAuthorized,
                Code5::TopicFilterInvalid,
                Code5::Success(QoS5::ExactlyOnce),
            ],
            properties: None,
        };
        let Seen::SubAck(shaped) = seen(Event::Incoming(Packet::SubAck(suback))) else {
            panic!("not a SUBACK");
        };
        assert_eq!(shaped.pkid, 9);
        assert_eq!(
            shaped.return_codes,
            [
                Code::Success(QoS::AtLeastOnce),
                Code::Failure,
                Code::Failure,
                Code::Success(QoS::ExactlyOnce),
            ]
        );
        assert!(matches!(
            seen(Event::Outgoing(Outgoing::Subscribe(4))),
            Seen::SubscribeWritten(4)
        ));
        assert!(matches!(
            seen(Event::Outgoing(Outgoing::Publish(0))),
            Seen::PublishWritten
        ));
    }

    #[test]
    fn the_connect_announces_the_configured_keep_alive_and_the_timer_is_out_of_reach() {
        for seconds in [1, 2, 5, 60, 65_535] {
            let keep_alive = Duration::from_secs(seconds);
            let options = options("c", "h".into(), 1883, keep_alive, true, 10, 1024);
            assert_eq!(announced_by(&options), keep_alive);
            assert!(options.keep_alive() >= Duration::from_secs(1 << 16));
        }
        assert!(
            QUIET_TIMER >= Duration::from_secs(5),
            "set_keep_alive's floor"
        );
    }

    #[test]
    fn connack_codes_that_mean_a_311_return_code_keep_its_reason() {
        use ConnectReturnCode as C;
        use FailureReason as R;
        let cases = [
            (C::UnsupportedProtocolVersion, R::ProtocolVersion),
            (C::ClientIdentifierNotValid, R::IdentifierRejected),
            (C::BadUserNamePassword, R::BadCredentials),
            (C::NotAuthorized, R::NotAuthorized),
            (C::ServerUnavailable, R::ServerUnavailable),
            (C::ServerBusy, R::ServerBusy),
            (C::Banned, R::Banned),
            (C::BadAuthenticationMethod, R::BadAuthenticationMethod),
            (C::PacketTooLarge, R::PacketTooLarge),
            (C::QuotaExceeded, R::QuotaExceeded),
            (C::UseAnotherServer, R::UseAnotherServer),
            (C::ServerMoved, R::ServerMoved),
            (C::ConnectionRateExceeded, R::ConnectionRateExceeded),
            (C::UnspecifiedError, R::UnspecifiedError),
            (
                C::ImplementationSpecificError,
                R::ImplementationSpecificError,
            ),
            (C::MalformedPacket, R::Protocol),
        ];
        for (code, reason) in cases {
            assert_eq!(connack_reason(code), reason, "{code:?}");
            assert_eq!(
                classify(&ConnectionError::ConnectionRefused(code)),
                Some(reason)
            );
        }
    }

    #[test]
    fn a_server_disconnect_names_why_the_broker_dropped_us() {
        use DisconnectReasonCode as D;
        use FailureReason as R;
        let cases = [
            (D::SessionTakenOver, R::SessionTakenOver),
            (D::ServerShuttingDown, R::ServerShuttingDown),
            (D::KeepAliveTimeout, R::KeepAliveTimeout),
            (D::AdministrativeAction, R::AdministrativeAction),
            (D::NormalDisconnection, R::ClosedByBroker),
            (D::MaximumConnectTime, R::MaximumConnectTime),
            (D::MessageRateTooHigh, R::MessageRateTooHigh),
            (D::ProtocolError, R::Protocol),
        ];
        for (code, reason) in cases {
            let error = ConnectionError::MqttState(StateError::ServerDisconnect {
                reason_code: code,
                reason_string: Some("told so".into()),
            });
            assert_eq!(classify(&error), Some(reason), "{code:?}");
        }
    }

    #[test]
    fn a_disconnect_s_reason_string_is_logged_clipped_with_its_code() {
        let error = ConnectionError::MqttState(StateError::ServerDisconnect {
            reason_code: DisconnectReasonCode::AdministrativeAction,
            reason_string: Some("kicked ".repeat(20_000)),
        });
        let failure = failure(&error);
        assert_eq!(failure.reason, Some(FailureReason::AdministrativeAction));
        assert!(
            failure
                .detail
                .starts_with("the broker sent DISCONNECT AdministrativeAction: \"kicked kicked"),
            "{}",
            failure.detail
        );
        assert!(failure.detail.chars().count() < 300, "{}", failure.detail);
        assert_eq!(clip("é".repeat(3).as_str(), 2), "éé…");
        assert_eq!(clip("short", 200), "short");
    }

    #[test]
    fn socket_and_state_errors_classify_as_for_311() {
        use FailureReason as R;
        let io = |kind| ConnectionError::Io(std::io::Error::from(kind));
        let cases = [
            (
                io(std::io::ErrorKind::ConnectionRefused),
                R::ConnectionRefused,
            ),
            (io(std::io::ErrorKind::ConnectionReset), R::ClosedByBroker),
            (
                ConnectionError::MqttState(StateError::ConnectionAborted),
                R::ClosedByBroker,
            ),
            (
                ConnectionError::MqttState(StateError::AwaitPingResp),
                R::PingTimeout,
            ),
            (
                ConnectionError::MqttState(StateError::Deserialization(
                    mqttbytes::Error::MalformedPacket,
                )),
                R::Protocol,
            ),
        ];
        for (error, reason) in cases {
            assert_eq!(classify(&error), Some(reason), "{error:?}");
        }
        assert_eq!(classify(&ConnectionError::RequestsDone), None);
    }
}
