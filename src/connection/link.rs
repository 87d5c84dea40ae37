//! The protocol bookkeeping of one MQTT connection, without I/O: which status
//! it is in, whether a PINGREQ is outstanding and since when, and what each
//! event ([`Beat`], of either protocol version) or 3.1.1 rumqttc error means
//! for the events hub (MQTT 5 errors: `wire::v5`).
//!
//! Design (after rumqttc's `state.rs`): methods take the time as an argument and
//! only change state and return what to report; they never touch a socket, a
//! clock or the hub, so every rule here is tested with plain `Instant`s.

use std::io;
use std::time::{Duration, Instant};

use rumqttc::{ConnectReturnCode, ConnectionError, Outgoing, Packet, StateError};

use super::streak::STABLE_AFTER;
use crate::events::{FailureReason, Status};

/// Status and keep-alive state of one connection.
#[derive(Debug)]
pub(crate) struct Link {
    status: Status,
    ping_sent_at: Option<Instant>,
    /// When the broker accepted the current connection.
    up_since: Option<Instant>,
}

/// What the link needs to know of an event the event loop yielded, whatever
/// the protocol version (`wire::Seen::beat` for the driver; the `From` for a
/// host's own 3.1.1 loop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Beat {
    /// A CONNACK accepted the CONNECT (a refusing one is an error).
    Accepted,
    /// A PINGREQ was written.
    PingWritten,
    /// A PINGRESP was read.
    PingAnswered,
    /// Anything else.
    Other,
}

impl From<&rumqttc::Event> for Beat {
    fn from(event: &rumqttc::Event) -> Self {
        match event {
            // rumqttc turns a refused CONNACK into an error, so every ConnAck
            // event is an accepted connection.
            rumqttc::Event::Incoming(Packet::ConnAck(_)) => Beat::Accepted,
            rumqttc::Event::Outgoing(Outgoing::PingReq) => Beat::PingWritten,
            rumqttc::Event::Incoming(Packet::PingResp) => Beat::PingAnswered,
            _ => Beat::Other,
        }
    }
}

/// What an observed event means for the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Observed {
    /// The status changed to this.
    StatusChanged(Status),
    /// A PINGRESP answered the outstanding PINGREQ after this long.
    PingResponse(Duration),
    /// Nothing to report.
    Nothing,
}

impl Link {
    /// A link that has not connected yet: Down, no ping outstanding.
    pub(crate) fn new() -> Self {
        Self {
            status: Status::Down,
            ping_sent_at: None,
            up_since: None,
        }
    }

    pub(crate) fn status(&self) -> Status {
        self.status
    }

    /// Feeds one event `poll()` returned, stamped with the time it returned.
    pub(crate) fn observe(&mut self, beat: Beat, now: Instant) -> Observed {
        match beat {
            Beat::Accepted => {
                self.ping_sent_at = None;
                self.up_since = Some(now);
                self.change(Status::Up)
            }
            Beat::PingWritten => {
                // A second PINGREQ before the first was answered keeps the
                // older stamp: the round trip being measured is the oldest one.
                self.ping_sent_at.get_or_insert(now);
                Observed::Nothing
            }
            Beat::PingAnswered => match self.ping_sent_at.take() {
                Some(sent) => Observed::PingResponse(now.saturating_duration_since(sent)),
                None => Observed::Nothing, // unsolicited: nothing to measure
            },
            Beat::Other => Observed::Nothing,
        }
    }

    /// The connection was lost or an attempt failed. Down is reported only if
    /// the link was up; a failed attempt while down changes nothing.
    pub(crate) fn lost(&mut self) -> Option<Status> {
        self.ping_sent_at = None;
        self.up_since = None;
        match self.status {
            Status::Up => self.change_to(Status::Down),
            _ => None,
        }
    }

    /// The reason to count for a failure at `now`: a broker that closes a
    /// connection it accepted less than [`STABLE_AFTER`] ago is
    /// `closed_after_connect`, not `closed_by_broker`.
    pub(crate) fn refine(&self, reason: FailureReason, now: Instant) -> FailureReason {
        let recent = self
            .up_since
            .is_some_and(|since| now.saturating_duration_since(since) < STABLE_AFTER);
        if reason == FailureReason::ClosedByBroker && self.status == Status::Up && recent {
            FailureReason::ClosedAfterConnect
        } else {
            reason
        }
    }

    /// When an unanswered PINGREQ counts as a missed PINGRESP.
    pub(crate) fn ping_deadline(&self, ping_timeout: Duration) -> Option<Instant> {
        self.ping_sent_at.map(|sent| sent + ping_timeout)
    }

    /// A shutdown was requested.
    pub(crate) fn terminating(&mut self) -> Option<Status> {
        self.ping_sent_at = None;
        self.change_to(Status::Terminating)
    }

    /// The connection's task is ending.
    pub(crate) fn terminated(&mut self) -> Option<Status> {
        self.change_to(Status::Terminated)
    }

    fn change(&mut self, status: Status) -> Observed {
        self.change_to(status)
            .map_or(Observed::Nothing, Observed::StatusChanged)
    }

    fn change_to(&mut self, status: Status) -> Option<Status> {
        if self.status == status {
            return None;
        }
        self.status = status;
        Some(status)
    }
}

/// Why a connection attempt failed or a connection was lost, from rumqttc's
/// error. `None` for errors that are not failures of the connection
/// (every client handle dropped).
pub(crate) fn classify(error: &ConnectionError) -> Option<FailureReason> {
    Some(match error {
        ConnectionError::Io(e) => classify_io(e),
        ConnectionError::MqttState(state) => match state {
            StateError::Io(e) => classify_io(e),
            // rumqttc's codec reports a socket error met while reading or
            // writing a packet (a reset, a broken pipe) as a codec error.
            StateError::Deserialization(rumqttc::mqttbytes::Error::Io(e)) => classify_io(e),
            StateError::AwaitPingResp => FailureReason::PingTimeout,
            StateError::ConnectionAborted => FailureReason::ClosedByBroker,
            _ => FailureReason::Protocol,
        },
        ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => FailureReason::Timeout,
        ConnectionError::Tls(_) => FailureReason::Tls,
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::RefusedProtocolVersion => FailureReason::ProtocolVersion,
            ConnectReturnCode::BadClientId => FailureReason::IdentifierRejected,
            ConnectReturnCode::ServiceUnavailable => FailureReason::ServerUnavailable,
            ConnectReturnCode::BadUserNamePassword => FailureReason::BadCredentials,
            ConnectReturnCode::NotAuthorized => FailureReason::NotAuthorized,
            ConnectReturnCode::Success => FailureReason::Protocol,
        },
        ConnectionError::NotConnAck(_) => FailureReason::Protocol,
        ConnectionError::RequestsDone => return None,
        #[cfg(feature = "websocket")]
        ConnectionError::Websocket(e) => match std::error::Error::source(e) {
            Some(source) => match source.downcast_ref::<io::Error>() {
                Some(e) => classify_io(e),
                None => FailureReason::Protocol,
            },
            None => FailureReason::Protocol,
        },
        #[cfg(feature = "websocket")]
        ConnectionError::WsConnect(_)
        | ConnectionError::InvalidUrl(_)
        | ConnectionError::ResponseValidation(_) => FailureReason::Protocol,
        // Without our `websocket` feature a host may still turn on rumqttc's
        // (features unify), which adds the WebSocket variants matched above;
        // with it, every variant is matched already.
        #[allow(unreachable_patterns)]
        _ => FailureReason::Protocol,
    })
}

pub(crate) fn classify_io(error: &io::Error) -> FailureReason {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => FailureReason::ConnectionRefused,
        io::ErrorKind::TimedOut => FailureReason::Timeout,
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => FailureReason::ClosedByBroker,
        // tokio-rustls reports handshake and alert failures as InvalidData
        // wrapping a rustls error.
        io::ErrorKind::InvalidData
            if error
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>()) =>
        {
            FailureReason::Tls
        }
        _ => FailureReason::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{ConnAck, Event, Incoming};

    fn connack() -> Event {
        Event::Incoming(Incoming::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        )))
    }
    const PINGREQ: Event = Event::Outgoing(Outgoing::PingReq);
    const PINGRESP: Event = Event::Incoming(Incoming::PingResp);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A link that went up on a CONNACK at `t0`.
    fn up_since_t0() -> (Link, Instant) {
        let mut link = Link::new();
        let t0 = Instant::now();
        link.observe(Beat::from(&connack()), t0);
        (link, t0)
    }

    #[test]
    fn starts_down_and_goes_up_on_connack() {
        let mut link = Link::new();
        assert_eq!(link.status(), Status::Down);
        let t0 = Instant::now();
        assert_eq!(
            link.observe(Beat::from(&connack()), t0),
            Observed::StatusChanged(Status::Up)
        );
        assert_eq!(link.status(), Status::Up);
    }

    #[test]
    fn reports_a_status_only_when_it_changes() {
        let (mut link, t0) = up_since_t0();
        assert_eq!(link.observe(Beat::from(&connack()), t0), Observed::Nothing);
        assert_eq!(link.lost(), Some(Status::Down));
        assert_eq!(
            link.lost(),
            None,
            "a failed attempt while down is no change"
        );
    }

    #[test]
    fn a_failed_first_attempt_sends_nothing() {
        let mut link = Link::new();
        assert_eq!(link.lost(), None);
        assert_eq!(link.status(), Status::Down);
    }

    #[test]
    fn measures_the_round_trip_from_pingreq_to_pingresp() {
        let (mut link, t0) = up_since_t0();
        assert_eq!(
            link.observe(Beat::from(&PINGREQ), t0 + ms(1000)),
            Observed::Nothing
        );
        assert_eq!(
            link.observe(Beat::from(&PINGRESP), t0 + ms(1003)),
            Observed::PingResponse(ms(3))
        );
    }

    #[test]
    fn ignores_a_pingresp_with_no_outstanding_pingreq() {
        let (mut link, t0) = up_since_t0();
        assert_eq!(
            link.observe(Beat::from(&PINGRESP), t0 + ms(5)),
            Observed::Nothing
        );
        link.observe(Beat::from(&PINGREQ), t0 + ms(10));
        link.observe(Beat::from(&PINGRESP), t0 + ms(11));
        assert_eq!(
            link.observe(Beat::from(&PINGRESP), t0 + ms(12)),
            Observed::Nothing,
            "one PINGREQ is answered once"
        );
    }

    #[test]
    fn keeps_the_oldest_outstanding_pingreq() {
        let (mut link, t0) = up_since_t0();
        link.observe(Beat::from(&PINGREQ), t0 + ms(100));
        link.observe(Beat::from(&PINGREQ), t0 + ms(200));
        assert_eq!(link.ping_deadline(ms(50)), Some(t0 + ms(150)));
        assert_eq!(
            link.observe(Beat::from(&PINGRESP), t0 + ms(210)),
            Observed::PingResponse(ms(110))
        );
    }

    #[test]
    fn a_loss_clears_the_outstanding_ping() {
        let (mut link, t0) = up_since_t0();
        link.observe(Beat::from(&PINGREQ), t0 + ms(100));
        assert_eq!(link.ping_deadline(ms(500)), Some(t0 + ms(600)));
        link.lost();
        assert_eq!(link.ping_deadline(ms(500)), None);
        link.observe(Beat::from(&connack()), t0 + ms(700));
        assert_eq!(
            link.observe(Beat::from(&PINGRESP), t0 + ms(710)),
            Observed::Nothing,
            "a reply from the old connection's ping is not measured"
        );
    }

    #[test]
    fn a_connack_clears_a_stale_ping() {
        let mut link = Link::new();
        let t0 = Instant::now();
        link.observe(Beat::from(&PINGREQ), t0);
        link.observe(Beat::from(&connack()), t0 + ms(5));
        assert_eq!(link.ping_deadline(ms(1)), None);
    }

    #[test]
    fn a_close_soon_after_connack_is_closed_after_connect_later_closed_by_broker() {
        use FailureReason as R;
        let mut link = Link::new();
        let t0 = Instant::now();
        assert_eq!(
            link.refine(R::ClosedByBroker, t0),
            R::ClosedByBroker,
            "never up"
        );
        link.observe(Beat::from(&connack()), t0);
        assert_eq!(
            link.refine(R::ClosedByBroker, t0 + ms(5)),
            R::ClosedAfterConnect
        );
        assert_eq!(link.refine(R::PingTimeout, t0 + ms(5)), R::PingTimeout);
        assert_eq!(
            link.refine(R::ClosedByBroker, t0 + STABLE_AFTER),
            R::ClosedByBroker
        );
        link.lost();
        assert_eq!(
            link.refine(R::ClosedByBroker, t0 + ms(5)),
            R::ClosedByBroker
        );
    }

    #[test]
    fn shutdown_goes_terminating_then_terminated_once_each() {
        let mut link = Link::new();
        link.observe(Beat::from(&connack()), Instant::now());
        assert_eq!(link.terminating(), Some(Status::Terminating));
        assert_eq!(link.terminating(), None);
        assert_eq!(link.lost(), None, "a loss while terminating is not Down");
        assert_eq!(link.terminated(), Some(Status::Terminated));
        assert_eq!(link.terminated(), None);
    }

    #[test]
    fn classifies_errors_by_reason() {
        use FailureReason as R;
        let io = |kind| ConnectionError::Io(io::Error::from(kind));
        let cases = [
            (io(io::ErrorKind::ConnectionRefused), R::ConnectionRefused),
            (io(io::ErrorKind::TimedOut), R::Timeout),
            (io(io::ErrorKind::ConnectionReset), R::ClosedByBroker),
            (io(io::ErrorKind::Other), R::Io),
            (ConnectionError::NetworkTimeout, R::Timeout),
            (
                ConnectionError::MqttState(StateError::AwaitPingResp),
                R::PingTimeout,
            ),
            (
                ConnectionError::MqttState(StateError::ConnectionAborted),
                R::ClosedByBroker,
            ),
            (
                ConnectionError::MqttState(StateError::Deserialization(
                    rumqttc::mqttbytes::Error::Io(io::Error::from(io::ErrorKind::ConnectionReset)),
                )),
                R::ClosedByBroker,
            ),
            (
                ConnectionError::MqttState(StateError::WrongPacket),
                R::Protocol,
            ),
            (
                ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword),
                R::BadCredentials,
            ),
            (
                ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
                R::NotAuthorized,
            ),
            (
                ConnectionError::ConnectionRefused(ConnectReturnCode::BadClientId),
                R::IdentifierRejected,
            ),
            (
                ConnectionError::ConnectionRefused(ConnectReturnCode::RefusedProtocolVersion),
                R::ProtocolVersion,
            ),
            (
                ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable),
                R::ServerUnavailable,
            ),
            (
                ConnectionError::NotConnAck(rumqttc::Packet::PingResp),
                R::Protocol,
            ),
            // What a TCP connect to a broadcast address gets (tests/connection.rs).
            (io(io::ErrorKind::NetworkUnreachable), R::Io),
            (
                ConnectionError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
                )),
                R::Tls,
            ),
        ];
        for (error, reason) in cases {
            assert_eq!(classify(&error), Some(reason), "{error:?}");
        }
        assert_eq!(classify(&ConnectionError::RequestsDone), None);
    }
}
