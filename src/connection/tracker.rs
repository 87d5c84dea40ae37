//! Turns what a rumqttc event loop yields into hub events and failure counts,
//! for a connection driven by [`Connection`](super::Connection) or by an
//! embedding service's own `EventLoop`. It owns the per-connection logging; it
//! must never block (the hub's dispatch is synchronous and non-blocking).

use std::time::{Duration, Instant};

use rumqttc::ConnectionError;

use super::link::{Link, Observed, classify};
use crate::events::{ClientId, ClientInfo, Event, Events, FailureReason, Status};

/// Reports one MQTT connection's health to an events hub from the events and
/// errors its rumqttc `EventLoop::poll()` returns.
///
/// For a service that already polls its own event loop: call
/// [`observe`](Self::observe) with each event and
/// [`observe_error`](Self::observe_error) with each error, and the hub (and so
/// the exporters) sees the same `Status` and `PingResponse` events as for a
/// connection mqtt-pulse drives. Dropping the tracker reports the connection
/// as terminated.
///
/// ```
/// use mqtt_pulse::connection::ConnectionTracker;
/// use mqtt_pulse::events::{Events, Status};
/// use rumqttc::{ConnAck, ConnectReturnCode, Event, Incoming};
///
/// let events = Events::new();
/// let mut tracker = ConnectionTracker::new(&events, "my-service", "127.0.0.1:1883");
/// assert_eq!(events.status("my-service"), Some(Status::Down));
///
/// // In the service's own loop: `let event = eventloop.poll().await?;`
/// let event = Event::Incoming(Incoming::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)));
/// tracker.observe(&event);
/// assert_eq!(events.status("my-service"), Some(Status::Up));
/// ```
#[derive(Debug)]
pub struct ConnectionTracker {
    events: Events,
    client_id: ClientId,
    broker: std::sync::Arc<str>,
    link: Link,
}

impl ConnectionTracker {
    /// Starts tracking `client_id`, connected (or connecting) to `broker`
    /// (`host:port`). The hub knows the client from now on, as Down.
    pub fn new(events: &Events, client_id: impl Into<ClientId>, broker: impl Into<String>) -> Self {
        let broker: std::sync::Arc<str> = broker.into().into();
        Self::with_info(events, client_id, ClientInfo::new(broker))
    }

    /// As [`new`](Self::new), with everything the hub should know of the
    /// client: its broker and extra constant labels.
    pub fn with_info(events: &Events, client_id: impl Into<ClientId>, info: ClientInfo) -> Self {
        let client_id = client_id.into();
        let broker = std::sync::Arc::clone(&info.broker);
        events.announce(&client_id, info);
        Self {
            events: events.clone(),
            client_id,
            broker,
            link: Link::new(),
        }
    }

    /// The tracked client.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    /// The status last reported.
    pub fn status(&self) -> Status {
        self.link.status()
    }

    /// Feeds one event as `poll()` returned it. Call it as soon as `poll()`
    /// returns: the ping round trip is measured between these calls.
    pub fn observe(&mut self, event: &rumqttc::Event) {
        self.observe_at(event, Instant::now());
    }

    pub(crate) fn observe_at(&mut self, event: &rumqttc::Event, now: Instant) {
        match self.link.observe(event, now) {
            Observed::StatusChanged(status) => self.report(status, None),
            Observed::PingResponse(rtt) => {
                self.events
                    .dispatch(&self.client_id, Event::PingResponse(rtt));
            }
            Observed::Nothing => {}
        }
    }

    /// Feeds one error `poll()` returned: counts it by reason and reports Down
    /// if the connection was up. Returns the reason, or `None` for an error that
    /// is not a connection failure.
    pub fn observe_error(&mut self, error: &ConnectionError) -> Option<FailureReason> {
        let reason = self.link.refine(classify(error)?, Instant::now());
        self.failed(reason, error);
        Some(reason)
    }

    /// The outstanding PINGREQ went unanswered for too long.
    pub(crate) fn ping_timed_out(&mut self, timeout: Duration) {
        self.failed(
            FailureReason::PingTimeout,
            &format_args!("no PINGRESP within {timeout:?}"),
        );
    }

    /// A connect attempt took longer than the connect timeout.
    pub(crate) fn connect_timed_out(&mut self, timeout: Duration) {
        self.failed(
            FailureReason::Timeout,
            &format_args!("not connected within {timeout:?}"),
        );
    }

    pub(crate) fn ping_deadline(&self, ping_timeout: Duration) -> Option<Instant> {
        self.link.ping_deadline(ping_timeout)
    }

    /// Reports that the connection is being shut down on purpose.
    pub fn terminating(&mut self) {
        if let Some(status) = self.link.terminating() {
            self.report(status, None);
        }
    }

    /// Reports that the connection has ended; the hub forgets the client.
    pub fn terminated(&mut self) {
        if let Some(status) = self.link.terminated() {
            self.report(status, None);
        }
    }

    fn failed(&mut self, reason: FailureReason, detail: &dyn std::fmt::Display) {
        self.events.count_failure(&self.client_id, reason);
        match self.link.lost() {
            Some(status) => self.report(status, Some((reason, detail))),
            None => tracing::debug!(
                client_id = %self.client_id,
                broker = %self.broker,
                reason = %reason,
                error = %detail,
                "connect attempt failed"
            ),
        }
    }

    fn report(&self, status: Status, cause: Option<(FailureReason, &dyn std::fmt::Display)>) {
        self.events.dispatch(&self.client_id, Event::Status(status));
        match cause {
            Some((reason, detail)) => tracing::info!(
                client_id = %self.client_id,
                broker = %self.broker,
                status = %status,
                reason = %reason,
                error = %detail,
                "connection status changed"
            ),
            None => tracing::info!(
                client_id = %self.client_id,
                broker = %self.broker,
                status = %status,
                "connection status changed"
            ),
        }
    }
}

impl Drop for ConnectionTracker {
    fn drop(&mut self) {
        self.terminated();
    }
}
