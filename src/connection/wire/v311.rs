//! MQTT 3.1.1 (`rumqttc`) events and errors in the driver's vocabulary. The
//! classification of errors is `link::classify`'s, which the public
//! [`ConnectionTracker`](crate::ConnectionTracker) shares.

use rumqttc::{ConnectionError, Event, Outgoing, Packet};

use super::{Failure, Seen};
use crate::connection::link::classify;

pub(crate) fn seen(event: Event) -> Seen {
    match event {
        Event::Incoming(Packet::ConnAck(connack)) => Seen::ConnAck {
            session_present: connack.session_present,
            server_keep_alive: None,
        },
        Event::Outgoing(Outgoing::PingReq) => Seen::PingReq,
        Event::Incoming(Packet::PingResp) => Seen::PingResp,
        Event::Incoming(Packet::Publish(publish)) => Seen::Publish(publish),
        Event::Outgoing(Outgoing::Publish(_)) => Seen::PublishWritten,
        Event::Outgoing(Outgoing::Subscribe(pkid)) => Seen::SubscribeWritten(pkid),
        Event::Incoming(Packet::SubAck(ack)) => Seen::SubAck(ack),
        Event::Outgoing(Outgoing::Disconnect) => Seen::Disconnect,
        _ => Seen::Other,
    }
}

pub(super) fn failure(error: &ConnectionError) -> Failure {
    Failure {
        reason: classify(error),
        detail: error.to_string(),
    }
}
