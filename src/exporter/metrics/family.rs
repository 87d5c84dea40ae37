//! The metric families this exporter owns: their names, help texts, types
//! and label names, in the order `Registry::gather` sorts them into. The one
//! place the exporter's metric names are written; encoding reads them here.

use prometheus::proto::MetricType;

/// The metric families this exporter owns, in the lexicographic order of their
/// names: the order `Registry::gather` sorts families into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Family {
    ConnectFailures,
    KeepAlive,
    LastStatusChange,
    PingRtt,
    PublishesDropped,
    RoundTripLastSuccess,
    RoundTripMessages,
    RoundTripRtt,
    RoundTripSent,
    StatusChanges,
    TlsCertExpiry,
    Up,
    PathLastSuccess,
    PathLatency,
    PathMessages,
    PathSent,
    BuildInfo,
    EventsDispatched,
    EventsDropped,
}

impl Family {
    pub const ALL: [Family; 19] = [
        Family::ConnectFailures,
        Family::KeepAlive,
        Family::LastStatusChange,
        Family::PingRtt,
        Family::PublishesDropped,
        Family::RoundTripLastSuccess,
        Family::RoundTripMessages,
        Family::RoundTripRtt,
        Family::RoundTripSent,
        Family::StatusChanges,
        Family::TlsCertExpiry,
        Family::Up,
        Family::PathLastSuccess,
        Family::PathLatency,
        Family::PathMessages,
        Family::PathSent,
        Family::BuildInfo,
        Family::EventsDispatched,
        Family::EventsDropped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::ConnectFailures => "mqtt_client_connect_failures_total",
            Family::KeepAlive => "mqtt_client_keep_alive_seconds",
            Family::LastStatusChange => "mqtt_client_last_status_change_timestamp_seconds",
            Family::PingRtt => "mqtt_client_ping_rtt_seconds",
            Family::PublishesDropped => "mqtt_client_publishes_dropped_total",
            Family::RoundTripLastSuccess => "mqtt_client_roundtrip_last_success_timestamp_seconds",
            Family::RoundTripMessages => "mqtt_client_roundtrip_messages_total",
            Family::RoundTripRtt => "mqtt_client_roundtrip_seconds",
            Family::RoundTripSent => "mqtt_client_roundtrip_sent_total",
            Family::StatusChanges => "mqtt_client_status_changes_total",
            Family::TlsCertExpiry => "mqtt_client_tls_cert_expiry_timestamp_seconds",
            Family::Up => "mqtt_client_up",
            Family::PathLastSuccess => "mqtt_path_last_success_timestamp_seconds",
            Family::PathLatency => "mqtt_path_latency_seconds",
            Family::PathMessages => "mqtt_path_messages_total",
            Family::PathSent => "mqtt_path_sent_total",
            Family::BuildInfo => "mqtt_pulse_build_info",
            Family::EventsDispatched => "mqtt_pulse_events_dispatched_total",
            Family::EventsDropped => "mqtt_pulse_events_dropped_total",
        }
    }

    pub fn help(self) -> &'static str {
        match self {
            Family::ConnectFailures => {
                "Failed MQTT connection attempts and lost connections of the client, by reason."
            }
            Family::KeepAlive => {
                "The MQTT keep-alive in force on the client's connection, in seconds: the one \
                 its CONNECT asks for, or the broker's Server Keep Alive when an MQTT 5 broker \
                 imposed one in the last CONNACK. The client pings within it."
            }
            Family::LastStatusChange => {
                "Unix time in seconds at which the client's current connection status began \
                 (or at which the client was announced, if it never connected)."
            }
            Family::PingRtt => {
                "MQTT keep-alive round-trip time in seconds, from PINGREQ written to PINGRESP read."
            }
            Family::PublishesDropped => {
                "Incoming PUBLISH packets the client's connection dropped: nobody took its \
                 queue of publishes, or the queue was full in count or bytes."
            }
            Family::RoundTripLastSuccess => {
                "Unix time in seconds at which a probe message of the client last came back \
                 in time and in order."
            }
            Family::RoundTripMessages => {
                "Probe messages of the client by outcome: received (back in time, in order), \
                 out_of_order, lost (not back within the timeout), late (back after it was \
                 counted lost), duplicate (a copy back again)."
            }
            Family::RoundTripRtt => {
                "Round-trip time in seconds of the client's probe messages received, from \
                 PUBLISH written to PUBLISH read."
            }
            Family::PathLastSuccess => {
                "Unix time in seconds at which a message of the broker-to-broker path last \
                 arrived in time and in order."
            }
            Family::PathLatency => {
                "Propagation time in seconds of the path's messages received, from PUBLISH \
                 written on the from client's connection to PUBLISH read on the to client's."
            }
            Family::PathMessages => {
                "Messages of the broker-to-broker path by outcome: received (in time, in \
                 order), out_of_order, lost (not across within the timeout), late (across \
                 after it was counted lost), duplicate (a copy across again)."
            }
            Family::PathSent => {
                "Messages of the broker-to-broker path written by the from client (only while \
                 the to client holds its subscription)."
            }
            Family::RoundTripSent => "Probe messages the client wrote to its broker.",
            Family::StatusChanges => {
                "Connection status changes of the client seen since the exporter started, \
                 by the status changed to."
            }
            Family::TlsCertExpiry => {
                "Unix time in seconds at which the broker certificate chain the client last \
                 verified expires: the earliest notAfter of the certificates the broker \
                 presented, read at each TLS connect."
            }
            Family::Up => {
                "Whether the MQTT client is connected to its broker: 1 after an accepted CONNACK, \
                 0 otherwise (never connected, connection lost, or shutting down)."
            }
            Family::BuildInfo => {
                "Always 1; labelled with the mqtt-pulse version, the git revision and the rustc \
                 version it was built from."
            }
            Family::EventsDispatched => "Events dispatched by the mqtt-pulse hub, by event type.",
            Family::EventsDropped => {
                "Event copies the mqtt-pulse hub dropped because a subscriber's queue was full, \
                 by event type."
            }
        }
    }

    pub fn metric_type(self) -> MetricType {
        match self {
            Family::ConnectFailures
            | Family::PublishesDropped
            | Family::RoundTripMessages
            | Family::RoundTripSent
            | Family::PathMessages
            | Family::PathSent
            | Family::StatusChanges
            | Family::EventsDispatched
            | Family::EventsDropped => MetricType::COUNTER,
            Family::KeepAlive
            | Family::LastStatusChange
            | Family::RoundTripLastSuccess
            | Family::PathLastSuccess
            | Family::TlsCertExpiry
            | Family::Up
            | Family::BuildInfo => MetricType::GAUGE,
            Family::PingRtt | Family::RoundTripRtt | Family::PathLatency => MetricType::HISTOGRAM,
        }
    }

    pub fn type_text(self) -> &'static str {
        match self.metric_type() {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
            MetricType::UNTYPED => "untyped",
        }
    }

    /// The label names, in the order every sample carries them.
    pub fn label_names(self) -> &'static [&'static str] {
        match self {
            Family::ConnectFailures => &["client_id", "broker", "reason"],
            Family::KeepAlive
            | Family::LastStatusChange
            | Family::PingRtt
            | Family::PublishesDropped
            | Family::RoundTripLastSuccess
            | Family::RoundTripRtt
            | Family::RoundTripSent
            | Family::TlsCertExpiry
            | Family::Up => &["client_id", "broker"],
            Family::RoundTripMessages => &["client_id", "broker", "outcome"],
            Family::StatusChanges => &["client_id", "broker", "status"],
            Family::PathLastSuccess | Family::PathLatency | Family::PathSent => {
                &["path", "from", "to"]
            }
            Family::PathMessages => &["path", "from", "to", "outcome"],
            Family::BuildInfo => &["version", "revision", "rustversion"],
            Family::EventsDispatched | Family::EventsDropped => &["type"],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_listed_in_name_order() {
        assert!(Family::ALL.is_sorted_by_key(|f| f.name()));
    }
}
