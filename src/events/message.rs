//! The vocabulary of the hub: client ids, filters, event kinds and the messages
//! subscribers receive. Plain data: nothing here locks, allocates on the hot path
//! beyond an `Arc` clone, or knows about queues.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// An MQTT client id, cheap to clone (a shared, immutable string).
///
/// ```
/// use mqtt_pulse::events::ClientId;
/// let id = ClientId::from("probe-plant-a");
/// assert_eq!(id.as_str(), "probe-plant-a");
/// assert_eq!(id.to_string(), "probe-plant-a");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Arc<str>);

impl ClientId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ClientId {
    fn from(id: &str) -> Self {
        Self(Arc::from(id))
    }
}

impl From<String> for ClientId {
    fn from(id: String) -> Self {
        Self(Arc::from(id))
    }
}

impl From<&ClientId> for ClientId {
    fn from(id: &ClientId) -> Self {
        id.clone()
    }
}

// `Borrow<str>` lets the hub's tables be searched with a `&str` without allocating;
// it is sound because `Arc<str>` hashes and compares exactly as `str` does.
impl Borrow<str> for ClientId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ClientId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Which clients a registration covers: one client id, or every client
/// (Tortoise311's `:_`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientFilter {
    /// Every client, present and future.
    Any,
    /// Exactly this client id.
    Id(ClientId),
}

impl From<&str> for ClientFilter {
    fn from(id: &str) -> Self {
        Self::Id(ClientId::from(id))
    }
}

impl From<ClientId> for ClientFilter {
    fn from(id: ClientId) -> Self {
        Self::Id(id)
    }
}

impl From<&ClientId> for ClientFilter {
    fn from(id: &ClientId) -> Self {
        Self::Id(id.clone())
    }
}

/// The connection status of a client, as Tortoise311 reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// The broker accepted the CONNECT (CONNACK with return code 0).
    Up,
    /// The connection was lost or could not be made; a reconnect is pending.
    Down,
    /// A shutdown was requested; the connection is being closed.
    Terminating,
    /// The connection's task has ended; no further events come for this client
    /// unless it is started again.
    Terminated,
}

impl Status {
    /// The lower-case name used in logs and metric labels (`up`, `down`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Down => "down",
            Status::Terminating => "terminating",
            Status::Terminated => "terminated",
        }
    }

    /// Whether the client is connected. Every status but [`Status::Up`] reads as
    /// not connected (0 on the `up` gauge).
    pub fn is_up(self) -> bool {
        self == Status::Up
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a client. More kinds may be added; match with a wildcard arm.
///
/// Not `Copy` (since [`Event::RoundTrip`] may name a path); clone it, or
/// match on a reference.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The connection status changed. Sent only on a change.
    Status(Status),
    /// A PINGRESP answered an outstanding PINGREQ after this round-trip time
    /// (PINGREQ written to PINGRESP read, on a monotonic clock).
    PingResponse(Duration),
    /// What became of one probe message the client published (issue 15):
    /// back in time, lost, late, duplicated or out of order.
    RoundTrip(RoundTrip),
}

impl Event {
    /// The kind a subscriber registers for to receive this event.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Status(_) => EventKind::Status,
            Event::PingResponse(_) => EventKind::PingResponse,
            Event::RoundTrip(_) => EventKind::RoundTrip,
        }
    }
}

/// The kinds of event one can register for (Tortoise311's `type` atom).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EventKind {
    /// [`Event::Status`] changes.
    Status,
    /// [`Event::PingResponse`] round trips.
    PingResponse,
    /// [`Event::RoundTrip`]s of probe messages.
    RoundTrip,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 3] = [
        EventKind::Status,
        EventKind::PingResponse,
        EventKind::RoundTrip,
    ];

    /// The name used in logs and metric labels (`status`, `ping_response`,
    /// `round_trip`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Status => "status",
            EventKind::PingResponse => "ping_response",
            EventKind::RoundTrip => "round_trip",
        }
    }

    /// Position in per-kind tables.
    pub(crate) fn index(self) -> usize {
        match self {
            EventKind::Status => 0,
            EventKind::PingResponse => 1,
            EventKind::RoundTrip => 2,
        }
    }

    pub(crate) fn bit(self) -> u8 {
        1 << self.index()
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of one probe message: the payload of [`Event::RoundTrip`].
///
/// A probe message is published with a sequence number and, when it comes
/// back, measured from its PUBLISH written to its PUBLISH read (the same
/// discipline as the ping round trip). Each message sent ends as exactly one
/// of [`Received`](RoundTripOutcome::Received),
/// [`OutOfOrder`](RoundTripOutcome::OutOfOrder) or
/// [`Lost`](RoundTripOutcome::Lost); [`Late`](RoundTripOutcome::Late) and
/// [`Duplicate`](RoundTripOutcome::Duplicate) are arrivals on top of that,
/// never a second success.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoundTrip {
    /// The message's sequence number (from 1, per probe or path and run).
    pub seq: u64,
    /// What became of it.
    pub outcome: RoundTripOutcome,
    /// `None` for the client's own probe (published and received on its
    /// connection); for a broker-to-broker path, the path's name — the
    /// message's client is then the connection that published it.
    pub path: Option<Arc<str>>,
}

impl RoundTrip {
    /// The outcome of message `seq` of a client's own probe.
    pub fn probe(seq: u64, outcome: RoundTripOutcome) -> Self {
        Self {
            seq,
            outcome,
            path: None,
        }
    }

    /// The outcome of message `seq` on the path named `path`.
    pub fn on_path(path: impl Into<Arc<str>>, seq: u64, outcome: RoundTripOutcome) -> Self {
        Self {
            seq,
            outcome,
            path: Some(path.into()),
        }
    }
}

/// What became of one probe message ([`RoundTrip`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RoundTripOutcome {
    /// Back within the timeout, the first copy, after every message sent
    /// before it that came back: a good round trip of this duration.
    Received(Duration),
    /// Back within the timeout, the first copy, but after a message sent
    /// later: counted as such, not as a success.
    OutOfOrder(Duration),
    /// Not back within the timeout.
    Lost,
    /// Back after it was counted lost (or too old to tell).
    Late,
    /// A copy of a message that had already come back.
    Duplicate,
}

impl RoundTripOutcome {
    /// Every outcome's label value, in declaration order.
    pub const LABELS: [&'static str; 5] = ["received", "out_of_order", "lost", "late", "duplicate"];

    /// The snake_case label value (`received`, `out_of_order`, `lost`,
    /// `late`, `duplicate`).
    pub fn as_str(self) -> &'static str {
        Self::LABELS[self.index()]
    }

    /// Position in [`LABELS`](Self::LABELS).
    pub(crate) fn index(self) -> usize {
        match self {
            RoundTripOutcome::Received(_) => 0,
            RoundTripOutcome::OutOfOrder(_) => 1,
            RoundTripOutcome::Lost => 2,
            RoundTripOutcome::Late => 3,
            RoundTripOutcome::Duplicate => 4,
        }
    }

    /// The round-trip time of a message back in time (received or out of
    /// order); `None` otherwise.
    pub fn rtt(self) -> Option<Duration> {
        match self {
            RoundTripOutcome::Received(rtt) | RoundTripOutcome::OutOfOrder(rtt) => Some(rtt),
            _ => None,
        }
    }
}

impl fmt::Display for RoundTripOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a subscriber receives: Tortoise311's `{{Tortoise311, client_id}, type, value}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The client the event is about.
    pub client_id: ClientId,
    /// What happened.
    pub event: Event,
    /// Wall-clock time at which the event was dispatched.
    pub at: SystemTime,
    /// Why the client went down, on an [`Event::Status`]`(`[`Status::Down`]`)`
    /// whose connection counted a failure first ([`Events::count_failure`]);
    /// `None` on every other message.
    ///
    /// [`Events::count_failure`]: super::Events::count_failure
    pub reason: Option<FailureReason>,
}

/// Why a connection attempt failed or an established connection was lost.
/// The label values of `mqtt_client_connect_failures_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FailureReason {
    /// Nothing accepted the TCP connection (connection refused).
    ConnectionRefused,
    /// The TCP, TLS or MQTT handshake did not complete within the connect timeout.
    Timeout,
    /// The TLS handshake failed (unknown CA, bad certificate, wrong name…).
    Tls,
    /// The broker refused the CONNECT: bad user name or password (CONNACK 4;
    /// MQTT 5: 0x86).
    BadCredentials,
    /// The broker refused the CONNECT: not authorised (CONNACK 5; MQTT 5:
    /// 0x87, also as a DISCONNECT).
    NotAuthorized,
    /// The broker refused the CONNECT: client identifier rejected (CONNACK 2;
    /// MQTT 5: 0x85).
    IdentifierRejected,
    /// The broker refused the CONNECT: unacceptable protocol version (CONNACK 1;
    /// MQTT 5: 0x84), or it does not speak MQTT 5 to a target set to `5`.
    ProtocolVersion,
    /// The broker refused the CONNECT: server unavailable (CONNACK 3; MQTT 5: 0x88).
    ServerUnavailable,
    /// No PINGRESP arrived in time for an outstanding PINGREQ.
    PingTimeout,
    /// The broker closed the connection (MQTT 5: also a DISCONNECT with 0x00,
    /// normal disconnection).
    ClosedByBroker,
    /// The broker closed the connection soon after accepting it (before it had
    /// been up for the stable period): typically another client with the same
    /// client id, an ACL or policy kick, or a load balancer's idle cut.
    ClosedAfterConnect,
    /// The broker sent something that is not valid MQTT at that point, or
    /// (MQTT 5) said that we did: malformed packet, protocol error, a
    /// topic, QoS or retain flag it does not accept.
    Protocol,
    /// Any other socket or name-resolution error.
    Io,
    // The reasons below come from MQTT 5 reason codes, in a CONNACK that
    // refuses the CONNECT or in a DISCONNECT the broker sends; a code that
    // means what a 3.1.1 return code means maps to the reason above (say
    // 0x86 to `BadCredentials`), see the README's table.
    /// MQTT 5: the broker refused or dropped the connection without saying
    /// why (reason code 0x80, unspecified error).
    UnspecifiedError,
    /// MQTT 5: a broker-specific refusal or drop (0x83, implementation
    /// specific error); the broker's log says more.
    ImplementationSpecificError,
    /// MQTT 5: the broker is busy, try later (0x89, server busy).
    ServerBusy,
    /// MQTT 5: the broker has banned this client (CONNACK 0x8A, banned).
    Banned,
    /// MQTT 5: the broker does not support the authentication method
    /// (CONNACK 0x8C, bad authentication method).
    BadAuthenticationMethod,
    /// MQTT 5: a packet was larger than the broker accepts (0x95, packet too large).
    PacketTooLarge,
    /// MQTT 5: an administrative or per-client quota was exceeded (0x97, quota exceeded).
    QuotaExceeded,
    /// MQTT 5: the broker asks the client to use another server, for now
    /// (0x9C, use another server).
    UseAnotherServer,
    /// MQTT 5: the broker asks the client to use another server, for good
    /// (0x9D, server moved).
    ServerMoved,
    /// MQTT 5: the client connects too often (0x9F, connection rate exceeded).
    ConnectionRateExceeded,
    /// MQTT 5: the broker sent DISCONNECT because it is shutting down
    /// (0x8B, server shutting down).
    ServerShuttingDown,
    /// MQTT 5: the broker sent DISCONNECT because it heard nothing within
    /// 1.5 keep-alives (0x8D, keep alive timeout).
    KeepAliveTimeout,
    /// MQTT 5: the broker sent DISCONNECT because another connection took
    /// this client id (0x8E, session taken over): two monitors, or a replica,
    /// configured with the same client id.
    SessionTakenOver,
    /// MQTT 5: the broker sent DISCONNECT on an operator's or a policy's
    /// order (0x98, administrative action).
    AdministrativeAction,
    /// MQTT 5: the broker sent DISCONNECT because the client published too
    /// fast (0x96, message rate too high).
    MessageRateTooHigh,
    /// MQTT 5: the broker sent DISCONNECT because the connection reached its
    /// longest allowed duration (0xA0, maximum connect time).
    MaximumConnectTime,
}

impl FailureReason {
    /// Every reason, in declaration order.
    pub const ALL: [FailureReason; 29] = [
        FailureReason::ConnectionRefused,
        FailureReason::Timeout,
        FailureReason::Tls,
        FailureReason::BadCredentials,
        FailureReason::NotAuthorized,
        FailureReason::IdentifierRejected,
        FailureReason::ProtocolVersion,
        FailureReason::ServerUnavailable,
        FailureReason::PingTimeout,
        FailureReason::ClosedByBroker,
        FailureReason::ClosedAfterConnect,
        FailureReason::Protocol,
        FailureReason::Io,
        FailureReason::UnspecifiedError,
        FailureReason::ImplementationSpecificError,
        FailureReason::ServerBusy,
        FailureReason::Banned,
        FailureReason::BadAuthenticationMethod,
        FailureReason::PacketTooLarge,
        FailureReason::QuotaExceeded,
        FailureReason::UseAnotherServer,
        FailureReason::ServerMoved,
        FailureReason::ConnectionRateExceeded,
        FailureReason::ServerShuttingDown,
        FailureReason::KeepAliveTimeout,
        FailureReason::SessionTakenOver,
        FailureReason::AdministrativeAction,
        FailureReason::MessageRateTooHigh,
        FailureReason::MaximumConnectTime,
    ];

    /// The snake_case label value (`bad_credentials`, `ping_timeout`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::ConnectionRefused => "connection_refused",
            FailureReason::Timeout => "timeout",
            FailureReason::Tls => "tls",
            FailureReason::BadCredentials => "bad_credentials",
            FailureReason::NotAuthorized => "not_authorized",
            FailureReason::IdentifierRejected => "identifier_rejected",
            FailureReason::ProtocolVersion => "protocol_version",
            FailureReason::ServerUnavailable => "server_unavailable",
            FailureReason::PingTimeout => "ping_timeout",
            FailureReason::ClosedByBroker => "closed_by_broker",
            FailureReason::ClosedAfterConnect => "closed_after_connect",
            FailureReason::Protocol => "protocol",
            FailureReason::Io => "io",
            FailureReason::UnspecifiedError => "unspecified_error",
            FailureReason::ImplementationSpecificError => "implementation_specific_error",
            FailureReason::ServerBusy => "server_busy",
            FailureReason::Banned => "banned",
            FailureReason::BadAuthenticationMethod => "bad_authentication_method",
            FailureReason::PacketTooLarge => "packet_too_large",
            FailureReason::QuotaExceeded => "quota_exceeded",
            FailureReason::UseAnotherServer => "use_another_server",
            FailureReason::ServerMoved => "server_moved",
            FailureReason::ConnectionRateExceeded => "connection_rate_exceeded",
            FailureReason::ServerShuttingDown => "server_shutting_down",
            FailureReason::KeepAliveTimeout => "keep_alive_timeout",
            FailureReason::SessionTakenOver => "session_taken_over",
            FailureReason::AdministrativeAction => "administrative_action",
            FailureReason::MessageRateTooHigh => "message_rate_too_high",
            FailureReason::MaximumConnectTime => "maximum_connect_time",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
