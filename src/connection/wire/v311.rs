//! MQTT 3.1.1 (`rumqttc`): the connection's event loop, and its events and
//! errors in the driver's vocabulary. The classification of errors is
//! `link::classify`'s, which the public
//! [`ConnectionTracker`](crate::ConnectionTracker) shares.
//!
//! [`Loop`] owns the memory a connected loop costs. rumqttc's `poll()`
//! future is sized for its TLS and WebSocket connect path (~14.5 KiB, a
//! 16 KiB allocator class) and, awaited inline, that size would be the
//! connection task's for the connection's whole life. So the loop polls
//! rumqttc's `poll()` only while connecting, boxed (the box lives for one
//! attempt), and once connected runs its own steady-state select (about
//! 1.2 KiB) over the parts of rumqttc's loop that are public: the
//! network's `readb`, `write` and `flush`, the `MqttState`, the pending
//! queue — and the request channel, which it creates itself (rumqttc's
//! receiver is private) and hands to the client through
//! `AsyncClient::from_senders`. The select must stay what rumqttc's private
//! `select()` is, packet for packet: buffered events first; network reads
//! in bulk with their acks flushed; pending requests before new ones, new
//! ones only while in-flight publishes and collisions allow; the same
//! flush timeout and errors; after an error, `clean()` so unacknowledged
//! publishes and unread requests are written again after the reconnect.
//! It leaves out one thing: rumqttc's keep-alive timer, because the driver
//! sends the PINGREQs itself once connected (`Wire::connected`).

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, Request,
    StateError,
};

use super::{Failure, Seen};
use crate::connection::link::classify;

/// A 3.1.1 event loop with the receiving end of its client's requests.
pub(crate) struct Loop {
    /// rumqttc's loop: its options, state, pending queue and network. Its
    /// own request channel stays empty: the client sends to `requests`.
    pub(crate) eventloop: EventLoop,
    /// What the client handles send: publishes, subscribes, DISCONNECT.
    requests: flume::Receiver<Request>,
}

/// The client handle and the loop of `options`, with room for `capacity`
/// requests between them.
pub(super) fn open(options: MqttOptions, capacity: usize) -> (AsyncClient, Loop) {
    let (sender, requests) = flume::bounded(capacity);
    // Its own channel is never sent to: the smallest that is not a
    // rendezvous.
    let eventloop = EventLoop::new(options, 1);
    (
        AsyncClient::from_senders(sender),
        Loop {
            eventloop,
            requests,
        },
    )
}

impl Loop {
    /// The next event, or the error that ended the connection or attempt:
    /// rumqttc's `poll()`, with a small future once connected (module doc).
    /// As cancel-safe as rumqttc's: its reads and the request intake are,
    /// and a write begun stays in the network's buffer for the next flush.
    pub(crate) async fn poll(&mut self) -> Result<Event, ConnectionError> {
        if self.eventloop.network.is_none() {
            // Connecting: rumqttc's own path (TCP or TLS, CONNECT, CONNACK),
            // whose future is boxed so that it costs its size only while an
            // attempt runs. It reads no request, so none is lost to it.
            return Box::pin(self.eventloop.poll()).await;
        }
        match self.select().await {
            Ok(event) => Ok(event),
            Err(error) => {
                // As rumqttc's `poll()` does after an error of its select.
                self.clean();
                Err(error)
            }
        }
    }

    /// Drops the socket; unacknowledged publishes and requests not yet read
    /// go to the pending queue, to be written after the next connect (as
    /// rumqttc's `clean()` does with its own channel: PUBACKs excepted).
    pub(crate) fn clean(&mut self) {
        self.eventloop.clean();
        self.eventloop.pending.extend(
            self.requests
                .drain()
                .filter(|request| !matches!(request, Request::PubAck(_))),
        );
    }

    /// rumqttc 0.25.1's `EventLoop::select` without the keep-alive branch
    /// (module doc): keep the two in step.
    async fn select(&mut self) -> Result<Event, ConnectionError> {
        let eventloop = &mut self.eventloop;
        let inflight_full = eventloop.state.inflight() >= eventloop.mqtt_options.inflight();
        let collision = eventloop.state.collision.is_some();
        let network_timeout = Duration::from_secs(eventloop.network_options.connection_timeout());
        let throttle = eventloop.mqtt_options.pending_throttle();

        // Events a previous poll buffered (a bulk read yields one at a time).
        if let Some(event) = eventloop.state.events.pop_front() {
            return Ok(event);
        }
        let Some(network) = eventloop.network.as_mut() else {
            // `poll` connects first; a select without a network is a bug
            // here, reported as the loss of the connection it would be.
            return Err(ConnectionError::MqttState(StateError::ConnectionAborted));
        };
        let state = &mut eventloop.state;
        let pending = &mut eventloop.pending;
        let requests = &self.requests;
        tokio::select! {
            // A bunch of packets from the network, acks written in bulk.
            read = network.readb(state) => {
                read?;
                flushed(network.flush(), network_timeout).await?;
            }
            // Pending requests first, then the client's, the latter only
            // while flow control allows (rumqttc's comment explains the
            // collision state).
            request = next_request(pending, requests, throttle),
                if !pending.is_empty() || (!inflight_full && !collision) =>
            {
                if let Some(outgoing) = state.handle_outgoing_packet(request?)? {
                    network.write(outgoing).await?;
                }
                flushed(network.flush(), network_timeout).await?;
            }
        }
        // Handling a packet, either way, records its event; were one ever
        // missing, the connection is dropped rather than the task panicking.
        state
            .events
            .pop_front()
            .ok_or(ConnectionError::MqttState(StateError::ConnectionAborted))
    }
}

/// A flush within the network timeout, its failure as rumqttc reports it.
async fn flushed(
    flush: impl Future<Output = Result<(), StateError>>,
    limit: Duration,
) -> Result<(), ConnectionError> {
    match tokio::time::timeout(limit, flush).await {
        Ok(flushed) => Ok(flushed?),
        Err(_) => Err(ConnectionError::FlushTimeout),
    }
}

/// The next request to write: a pending one after the throttle, else the
/// client's next. Cancel-safe: a pending request leaves the queue only once
/// the throttle has passed.
async fn next_request(
    pending: &mut VecDeque<Request>,
    requests: &flume::Receiver<Request>,
    throttle: Duration,
) -> Result<Request, ConnectionError> {
    if pending.is_empty() {
        return requests
            .recv_async()
            .await
            .map_err(|_| ConnectionError::RequestsDone);
    }
    tokio::time::sleep(throttle).await;
    pending.pop_front().ok_or(ConnectionError::RequestsDone)
}

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
