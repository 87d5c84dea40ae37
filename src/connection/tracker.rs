//! Turns what a rumqttc event loop yields into hub events and failure counts,
//! for a connection driven by [`Connection`](super::Connection) or by an
//! embedding service's own `EventLoop`. It owns the per-connection logging; it
//! must never block (the hub's dispatch is synchronous and non-blocking).

use std::time::{Duration, Instant};

use rumqttc::ConnectionError;

use super::error::OptionsError;
use super::link::{Beat, Link, Observed, classify};
use super::options::{ConnectionOptions, broker_label, default_ping_timeout};
use super::probe::ProbeOptions;
use super::prober::Prober;
use super::wire::{self, Pending, Seen};
use crate::events::{
    ClientId, ClientInfo, DroppedPublishCounter, Event, Events, FailureReason, Status,
};

/// Reports one MQTT connection's health to an events hub from the events and
/// errors its rumqttc `EventLoop::poll()` returns.
///
/// For a service that already polls its own event loop: build the tracker
/// from the same `MqttOptions` ([`from_mqtt_options`](Self::from_mqtt_options)),
/// call [`observe`](Self::observe) with each event and
/// [`observe_error`](Self::observe_error) with each error, and the hub (and so
/// the exporters) sees the same `Status` and `PingResponse` events as for a
/// connection mqtt-pulse drives. Dropping the tracker reports the connection
/// as terminated.
///
/// # The ping deadline
///
/// A [`Connection`](super::Connection) gives up on a PINGREQ left unanswered
/// for its ping timeout (half the keep-alive by default) and reports the
/// connection Down (reason `ping_timeout`); rumqttc alone notices only at the
/// next keep-alive tick, up to twice as late. The tracker only observes — it
/// owns no timer and cannot close the host's socket — so it offers the same
/// deadline for the host's loop to wait on: [`ping_deadline`](Self::ping_deadline)
/// says until when the outstanding PINGREQ may go unanswered, and
/// [`check_ping`](Self::check_ping) reports the timeout once it has passed
/// (then the host drops the link, e.g. `eventloop.clean()`, and polls again to
/// reconnect). A host that never calls them gets rumqttc's own detection.
///
/// ```
/// use mqtt_pulse::{ConnectionTracker, Events, Status};
/// use rumqttc::{ConnAck, ConnectReturnCode, Event, Incoming, MqttOptions};
///
/// let events = Events::new();
/// let options = MqttOptions::new("my-service", "127.0.0.1", 1883);
/// let mut tracker = ConnectionTracker::from_mqtt_options(&events, &options);
/// assert_eq!(events.status("my-service"), Some(Status::Down));
///
/// // In the service's own loop: `let event = eventloop.poll().await?;`
/// let event = Event::Incoming(Incoming::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)));
/// tracker.observe(&event);
/// assert_eq!(events.status("my-service"), Some(Status::Up));
/// assert_eq!(events.clients()[0].info.broker.as_ref(), "127.0.0.1:1883");
/// ```
///
/// With the deadline, in the host's loop:
///
/// ```no_run
/// # use mqtt_pulse::{ConnectionTracker, Events};
/// # async fn demo(mut eventloop: rumqttc::EventLoop, mut tracker: ConnectionTracker) {
/// loop {
///     let deadline = tracker.ping_deadline();
///     tokio::select! {
///         polled = eventloop.poll() => match polled {
///             Ok(event) => tracker.observe(&event),
///             Err(error) => {
///                 tracker.observe_error(&error);
///                 tokio::time::sleep(std::time::Duration::from_secs(1)).await; // your backoff
///             }
///         },
///         _ = tokio::time::sleep_until(deadline.unwrap_or_else(std::time::Instant::now).into()),
///             if deadline.is_some() =>
///         {
///             if tracker.check_ping(std::time::Instant::now()) {
///                 eventloop.clean(); // drop the silent link; the next poll reconnects
///             }
///         }
///     }
/// }
/// # }
/// ```
///
/// # Round-trip probes
///
/// A host loop can probe its connection too ([`with_probe`](Self::with_probe)):
/// the tracker puts the probe's SUBSCRIBE and PUBLISHes in the event loop's
/// pending requests, stamps them written and read from the events, and says
/// which incoming publishes are the probe's, so the host never handles one.
/// A host's own MQTT 5 loop does the same with
/// [`observe_in_v5`](Self::observe_in_v5) and
/// [`probe_tick_v5`](Self::probe_tick_v5).
///
/// ```no_run
/// # use mqtt_pulse::{ConnectionTracker, Events};
/// # use mqtt_pulse::connection::ProbeOptions;
/// # async fn demo(events: Events, options: rumqttc::MqttOptions) -> Result<(), Box<dyn std::error::Error>> {
/// let mut tracker = ConnectionTracker::from_mqtt_options(&events, &options)
///     .with_probe(&ProbeOptions::new())?;
/// let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 16);
/// loop {
///     let wakeup = tracker.probe_wakeup();
///     tokio::select! {
///         polled = eventloop.poll() => match polled {
///             Ok(event) => {
///                 if !tracker.observe_in(&event, &mut eventloop) {
///                     // the service's own handling of `event`
///                 }
///             }
///             Err(error) => {
///                 tracker.observe_error(&error);
///                 tokio::time::sleep(std::time::Duration::from_secs(1)).await; // your backoff
///             }
///         },
///         _ = tokio::time::sleep_until(wakeup.unwrap_or_else(std::time::Instant::now).into()),
///             if wakeup.is_some() => tracker.probe_tick(&mut eventloop),
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct ConnectionTracker {
    events: Events,
    client_id: ClientId,
    broker: std::sync::Arc<str>,
    link: Link,
    /// How long a PINGREQ may go unanswered; `None` without keep-alive.
    ping_timeout: Option<Duration>,
    /// The keep-alive the CONNECT asks for (a probe's default interval;
    /// for a host's own MQTT 5 loop, the one in force without a Server Keep
    /// Alive), and whether the ping timeout was set rather than derived from the
    /// keep-alive (a derived one follows a Server Keep Alive).
    asked_keep_alive: Duration,
    ping_timeout_set: bool,
    /// The client's counter in the hub, taken at the first drop so a
    /// connection that never drops one adds no entry, and every later drop
    /// is an atomic add instead of a hub-wide lock. Given up when the
    /// client is terminated: the hub forgets that count then.
    dropped_publishes: Option<DroppedPublishCounter>,
    /// The round-trip probe, when one is set up.
    prober: Option<Prober>,
}

impl ConnectionTracker {
    /// Starts tracking the connection `options` describe — the host's own
    /// rumqttc options: the client id, and the broker label as `host:port`
    /// (the same form [`ConnectionOptions::broker`] gives, `[v6]:port` for an
    /// IPv6 address). The ping timeout is half the keep-alive, as for a
    /// [`Connection`](super::Connection); none when keep-alive is off. The hub
    /// knows the client from now on, as Down.
    pub fn from_mqtt_options(events: &Events, options: &rumqttc::MqttOptions) -> Self {
        let (host, port) = options.broker_address();
        let keep_alive = options.keep_alive();
        let mut tracker = Self::with_info(
            events,
            options.client_id(),
            ClientInfo::new(broker_label(&host, port)),
        );
        tracker.ping_timeout = (!keep_alive.is_zero()).then(|| default_ping_timeout(keep_alive));
        tracker.asked_keep_alive = keep_alive;
        events.record_keep_alive(&tracker.client_id, keep_alive);
        tracker
    }

    /// [`from_mqtt_options`](Self::from_mqtt_options) for a host's own
    /// MQTT 5 loop (`rumqttc::v5`): feed it with
    /// [`observe_v5`](Self::observe_v5) and
    /// [`observe_error_v5`](Self::observe_error_v5). A Server Keep Alive in
    /// a CONNACK becomes the keep-alive the hub shows
    /// (`mqtt_client_keep_alive_seconds`) and, unless
    /// [`with_ping_timeout`](Self::with_ping_timeout) set one, halves into
    /// the ping deadline, as rumqttc's v5 loop then pings by it too.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mqtt_pulse::events::FailureReason;
    /// use mqtt_pulse::{ConnectionTracker, Events, Status};
    /// use rumqttc::v5::mqttbytes::v5::{ConnAck, ConnectReturnCode, Packet};
    /// use rumqttc::v5::{ConnectionError, Event, MqttOptions};
    ///
    /// let events = Events::new();
    /// let options = MqttOptions::new("my-service", "127.0.0.1", 1883);
    /// let mut tracker = ConnectionTracker::from_mqtt5_options(&events, &options);
    /// assert_eq!(events.clients()[0].keep_alive, Some(Duration::from_secs(60)));
    ///
    /// // In the service's own loop: `let event = eventloop.poll().await?;`
    /// # let properties = rumqttc::v5::mqttbytes::v5::ConnAckProperties {
    /// #     session_expiry_interval: None, receive_max: None, max_qos: None,
    /// #     retain_available: None, max_packet_size: None, assigned_client_identifier: None,
    /// #     topic_alias_max: None, reason_string: None, user_properties: Vec::new(),
    /// #     wildcard_subscription_available: None, subscription_identifiers_available: None,
    /// #     shared_subscription_available: None, response_information: None,
    /// #     server_reference: None, authentication_method: None, authentication_data: None,
    /// #     server_keep_alive: Some(20), // the broker's Server Keep Alive
    /// # };
    /// let connack = ConnAck {
    ///     session_present: false,
    ///     code: ConnectReturnCode::Success,
    ///     properties: Some(properties), // with a Server Keep Alive of 20 s
    /// };
    /// tracker.observe_v5(&Event::Incoming(Packet::ConnAck(connack)));
    /// assert_eq!(events.status("my-service"), Some(Status::Up));
    /// assert_eq!(events.clients()[0].keep_alive, Some(Duration::from_secs(20)));
    ///
    /// let refused = ConnectionError::ConnectionRefused(ConnectReturnCode::Banned);
    /// assert_eq!(tracker.observe_error_v5(&refused), Some(FailureReason::Banned));
    /// assert_eq!(events.status("my-service"), Some(Status::Down));
    /// ```
    pub fn from_mqtt5_options(events: &Events, options: &rumqttc::v5::MqttOptions) -> Self {
        let (host, port) = options.broker_address();
        let keep_alive = options.keep_alive();
        let mut tracker = Self::with_info(
            events,
            options.client_id(),
            ClientInfo::new(broker_label(&host, port)),
        );
        tracker.ping_timeout = (!keep_alive.is_zero()).then(|| default_ping_timeout(keep_alive));
        tracker.asked_keep_alive = keep_alive;
        events.record_keep_alive(&tracker.client_id, keep_alive);
        tracker
    }

    /// Sets how long a PINGREQ may go unanswered before
    /// [`check_ping`](Self::check_ping) reports the connection lost.
    ///
    /// Defaults to half the keep-alive of the options it was built from.
    #[must_use]
    pub fn with_ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = Some(timeout);
        self.ping_timeout_set = true;
        self
    }

    /// The tracker of a connection mqtt-pulse drives.
    pub(crate) fn from_options(events: &Events, options: &ConnectionOptions) -> Self {
        let mut tracker =
            Self::with_info(events, options.client_id().clone(), options.client_info());
        tracker.ping_timeout = Some(options.ping_timeout());
        tracker.asked_keep_alive = options.keep_alive();
        events.record_keep_alive(&tracker.client_id, options.keep_alive());
        if let Some(probe) = options.probe() {
            // `Connection::start` checked it with the rest of the options.
            tracker.prober = Some(Prober::new(
                events,
                &tracker.client_id,
                probe,
                tracker.asked_keep_alive,
            ));
        }
        tracker
    }

    /// Adds a round-trip probe (see [`ProbeOptions`]) for a loop that polls
    /// its own `EventLoop`: feed events through
    /// [`observe_in`](Self::observe_in) instead of
    /// [`observe`](Self::observe), and call [`probe_tick`](Self::probe_tick)
    /// at [`probe_wakeup`](Self::probe_wakeup) — for an MQTT 5 loop,
    /// [`observe_in_v5`](Self::observe_in_v5) instead of
    /// [`observe_v5`](Self::observe_v5) and
    /// [`probe_tick_v5`](Self::probe_tick_v5). The probe's interval and
    /// timeout default to the keep-alive of the options the tracker was
    /// built from.
    ///
    /// # Errors
    /// [`OptionsError::Probe`] when a setting cannot be used (a topic with
    /// wildcards, say).
    pub fn with_probe(mut self, probe: &ProbeOptions) -> Result<Self, OptionsError> {
        let keep_alive = if self.asked_keep_alive.is_zero() {
            super::DEFAULT_KEEP_ALIVE
        } else {
            self.asked_keep_alive
        };
        if let Some((key, problem)) = probe.problem_for(keep_alive, self.client_id.as_str()) {
            return Err(OptionsError::Probe { key, problem });
        }
        self.prober = Some(Prober::new(
            &self.events,
            &self.client_id,
            probe,
            keep_alive,
        ));
        Ok(self)
    }

    /// The probe's topic (expanded), if a probe is set up.
    pub fn probe_topic(&self) -> Option<&str> {
        self.prober.as_ref().map(Prober::topic)
    }

    /// When [`probe_tick`](Self::probe_tick) has work: a probe message due,
    /// or one timing out. `None` without a probe, or with nothing to do.
    pub fn probe_wakeup(&self) -> Option<Instant> {
        self.prober.as_ref()?.wakeup()
    }

    /// Counts the probe messages lost by now and, if the next is due, puts
    /// it in `eventloop`'s pending requests (written by the next `poll()`,
    /// ahead of what the client handle sends).
    pub fn probe_tick(&mut self, eventloop: &mut rumqttc::EventLoop) {
        self.probe_tick_at(Instant::now(), &mut eventloop.pending);
    }

    pub(crate) fn probe_tick_at(&mut self, now: Instant, pending: &mut dyn Pending) {
        if let Some(prober) = &mut self.prober {
            prober.tick(&self.events, &self.client_id, now, pending);
        }
    }

    /// [`observe`](Self::observe) for a tracker with a probe: also
    /// subscribes the probe topic on each new session, stamps the probe's
    /// PUBLISH written and read, and reports the round trips. Call it as soon
    /// as `poll()` returns. `true` when the event is an incoming probe
    /// message: the probe's own, not one for the host to handle.
    pub fn observe_in(
        &mut self,
        event: &rumqttc::Event,
        eventloop: &mut rumqttc::EventLoop,
    ) -> bool {
        let seen = wire::v311::seen(event.clone());
        self.observe_in_at(&seen, Instant::now(), &mut eventloop.pending)
    }

    pub(crate) fn observe_in_at(
        &mut self,
        seen: &Seen,
        now: Instant,
        pending: &mut dyn Pending,
    ) -> bool {
        self.observe_at(seen.beat(), now);
        let Some(prober) = &mut self.prober else {
            return false;
        };
        if let &Seen::ConnAck {
            session_present, ..
        } = seen
        {
            prober.connected(&self.events, &self.client_id, now, session_present, pending);
            return false;
        }
        prober.observe(&self.events, &self.client_id, seen, now, pending)
    }

    /// The broker accepted a CONNECT with `keep_alive` in force (the one
    /// asked for, or an MQTT 5 Server Keep Alive) and a PINGREQ may go
    /// unanswered for `ping_timeout`: the hub's record of the keep-alive
    /// (`mqtt_client_keep_alive_seconds`) and the ping deadline follow.
    pub(crate) fn keep_alive_in_force(&mut self, keep_alive: Duration, ping_timeout: Duration) {
        self.ping_timeout = Some(ping_timeout);
        self.events.record_keep_alive(&self.client_id, keep_alive);
    }

    fn with_info(events: &Events, client_id: impl Into<ClientId>, info: ClientInfo) -> Self {
        let client_id = client_id.into();
        let broker = std::sync::Arc::clone(&info.broker);
        events.announce(&client_id, info);
        Self {
            events: events.clone(),
            client_id,
            broker,
            link: Link::new(),
            ping_timeout: None,
            asked_keep_alive: Duration::ZERO,
            ping_timeout_set: false,
            dropped_publishes: None,
            prober: None,
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
        self.observe_at(Beat::from(event), Instant::now());
    }

    pub(crate) fn observe_at(&mut self, beat: Beat, now: Instant) {
        match self.link.observe(beat, now) {
            Observed::StatusChanged(status) => self.report(status, None),
            Observed::PingResponse(rtt) => {
                self.events
                    .dispatch(&self.client_id, Event::PingResponse(rtt));
            }
            Observed::Nothing => {}
        }
    }

    /// [`observe`](Self::observe) for an event of a host's own MQTT 5 loop
    /// (see [`from_mqtt5_options`](Self::from_mqtt5_options)).
    pub fn observe_v5(&mut self, event: &rumqttc::v5::Event) {
        let now = Instant::now();
        self.accepted_v5(event);
        self.observe_at(wire::v5::beat(event), now);
    }

    /// For a CONNACK of a host's own MQTT 5 loop: the keep-alive in force
    /// (the Server Keep Alive, if the broker sent one) into the hub's record
    /// and, unless one was set, the ping deadline.
    fn accepted_v5(&mut self, event: &rumqttc::v5::Event) {
        if let Some(server_keep_alive) = wire::v5::accepted_keep_alive(event) {
            let in_force = server_keep_alive.unwrap_or(self.asked_keep_alive);
            self.events.record_keep_alive(&self.client_id, in_force);
            if !self.ping_timeout_set {
                self.ping_timeout = (!in_force.is_zero()).then(|| default_ping_timeout(in_force));
            }
        }
    }

    /// [`observe_in`](Self::observe_in) for a host's own MQTT 5 loop (see
    /// [`from_mqtt5_options`](Self::from_mqtt5_options)): also what
    /// [`observe_v5`](Self::observe_v5) does with a Server Keep Alive. The
    /// probe's requests carry no MQTT 5 properties. `true` when the event is
    /// an incoming probe message, not one for the host to handle.
    ///
    /// ```no_run
    /// # use mqtt_pulse::{ConnectionTracker, Events};
    /// # use mqtt_pulse::connection::ProbeOptions;
    /// # async fn demo(events: Events, options: rumqttc::v5::MqttOptions) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tracker = ConnectionTracker::from_mqtt5_options(&events, &options)
    ///     .with_probe(&ProbeOptions::new())?;
    /// let (_client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 16);
    /// loop {
    ///     let wakeup = tracker.probe_wakeup();
    ///     tokio::select! {
    ///         polled = eventloop.poll() => match polled {
    ///             Ok(event) => {
    ///                 if !tracker.observe_in_v5(&event, &mut eventloop) {
    ///                     // the service's own handling of `event`
    ///                 }
    ///             }
    ///             Err(error) => {
    ///                 tracker.observe_error_v5(&error);
    ///                 tokio::time::sleep(std::time::Duration::from_secs(1)).await; // your backoff
    ///             }
    ///         },
    ///         _ = tokio::time::sleep_until(wakeup.unwrap_or_else(std::time::Instant::now).into()),
    ///             if wakeup.is_some() => tracker.probe_tick_v5(&mut eventloop),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn observe_in_v5(
        &mut self,
        event: &rumqttc::v5::Event,
        eventloop: &mut rumqttc::v5::EventLoop,
    ) -> bool {
        let now = Instant::now();
        self.accepted_v5(event);
        let seen = wire::v5::seen(event.clone());
        self.observe_in_at(&seen, now, &mut eventloop.pending)
    }

    /// [`probe_tick`](Self::probe_tick) for a host's own MQTT 5 loop: the
    /// next probe message, if due, goes into its pending requests.
    pub fn probe_tick_v5(&mut self, eventloop: &mut rumqttc::v5::EventLoop) {
        self.probe_tick_at(Instant::now(), &mut eventloop.pending);
    }

    /// [`observe_error`](Self::observe_error) for an error of a host's own
    /// MQTT 5 loop: the reason codes of a refusing CONNACK and of the
    /// broker's DISCONNECT become the reason (`bad_credentials`,
    /// `session_taken_over`, …).
    pub fn observe_error_v5(
        &mut self,
        error: &rumqttc::v5::ConnectionError,
    ) -> Option<FailureReason> {
        Some(self.observe_failure(wire::v5::classify(error)?, error))
    }

    /// Feeds one error `poll()` returned: counts it by reason and reports Down
    /// if the connection was up. Returns the reason, or `None` for an error that
    /// is not a connection failure.
    pub fn observe_error(&mut self, error: &ConnectionError) -> Option<FailureReason> {
        Some(self.observe_failure(classify(error)?, error))
    }

    /// Counts a failure already classified (by either protocol version's
    /// rules) and reports Down if the connection was up; returns the reason
    /// counted (`closed_after_connect` for a close soon after CONNACK).
    pub(crate) fn observe_failure(
        &mut self,
        reason: FailureReason,
        detail: &dyn std::fmt::Display,
    ) -> FailureReason {
        let reason = self.link.refine(reason, Instant::now());
        self.failed(reason, detail);
        reason
    }

    /// Until when the outstanding PINGREQ may go unanswered: the time it was
    /// sent plus the ping timeout. `None` when no PINGREQ is outstanding or
    /// keep-alive is off.
    pub fn ping_deadline(&self) -> Option<Instant> {
        self.link.ping_deadline(self.ping_timeout?)
    }

    /// If the [`ping_deadline`](Self::ping_deadline) has passed at `now`,
    /// counts a `ping_timeout` failure, reports the connection Down and
    /// returns `true`: the host should then drop the link and reconnect.
    /// Otherwise changes nothing and returns `false`.
    pub fn check_ping(&mut self, now: Instant) -> bool {
        match self.ping_deadline() {
            Some(deadline) if now >= deadline => {
                self.ping_timed_out();
                true
            }
            _ => false,
        }
    }

    /// The outstanding PINGREQ went unanswered for too long (the driver's
    /// own timer said so).
    pub(crate) fn ping_timed_out(&mut self) {
        let timeout = self.ping_timeout.unwrap_or_default();
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

    /// An incoming publish was dropped (nobody took the queue, or it was
    /// full): a counter in the hub, like the failures, so the exporters read
    /// it at scrape time the way they read every per-client count. Past the
    /// first drop it is one atomic add: a broker pushing at a connection
    /// whose queue nobody takes must not cost a hub-wide lock per message.
    pub(crate) fn publish_dropped(&mut self) {
        let (events, client_id) = (&self.events, &self.client_id);
        self.dropped_publishes
            .get_or_insert_with(|| events.dropped_publish_counter(client_id))
            .count();
    }

    /// A TLS handshake verified the broker's certificate chain, which
    /// expires at `not_after` (its earliest `notAfter`): kept in the hub for
    /// the exporters, like the counts, until the client is terminated.
    pub(crate) fn tls_chain_verified(&self, not_after: std::time::SystemTime) {
        self.events
            .record_tls_cert_expiry(&self.client_id, not_after);
    }

    /// Reports that the connection is being shut down on purpose.
    pub fn terminating(&mut self) {
        if let Some(prober) = &mut self.prober {
            prober.lost();
        }
        if let Some(status) = self.link.terminating() {
            self.report(status, None);
        }
    }

    /// Reports that the connection has ended; the hub forgets the client.
    pub fn terminated(&mut self) {
        if let Some(status) = self.link.terminated() {
            self.report(status, None);
            // The hub forgot the count; should the link come back, its drops
            // start a new one rather than vanish into the forgotten counter.
            self.dropped_publishes = None;
            if let Some(prober) = &mut self.prober {
                prober.forget_counter();
            }
        }
    }

    fn failed(&mut self, reason: FailureReason, detail: &dyn std::fmt::Display) {
        self.events.count_failure(&self.client_id, reason);
        if let Some(prober) = &mut self.prober {
            prober.lost();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::Request;
    use rumqttc::{ConnAck, ConnectReturnCode, Incoming, MqttOptions, Outgoing};
    use std::collections::VecDeque;

    fn up(tracker: &mut ConnectionTracker, at: Instant) {
        let connack = ConnAck::new(ConnectReturnCode::Success, false);
        let event = rumqttc::Event::Incoming(Incoming::ConnAck(connack));
        tracker.observe_at(Beat::from(&event), at);
    }

    #[test]
    fn the_broker_label_from_mqtt_options_is_spelled_as_connection_options_spell_it() {
        let events = Events::new();
        for (host, expected) in [("127.0.0.1", "127.0.0.1:1883"), ("::1", "[::1]:1883")] {
            let tracker =
                ConnectionTracker::from_mqtt_options(&events, &MqttOptions::new("a", host, 1883));
            let url = if host.contains(':') {
                format!("mqtt://[{host}]:1883")
            } else {
                format!("mqtt://{host}:1883")
            };
            let options = ConnectionOptions::new("a", &url).unwrap();
            assert_eq!(&*tracker.broker, expected);
            assert_eq!(options.broker(), expected);
        }
    }

    #[test]
    fn the_ping_deadline_is_half_the_keep_alive_as_for_a_connection() {
        let events = Events::new();
        let mut options = MqttOptions::new("a", "127.0.0.1", 1883);
        options.set_keep_alive(Duration::from_secs(4));
        let mut tracker = ConnectionTracker::from_mqtt_options(&events, &options);
        let t0 = Instant::now();
        up(&mut tracker, t0);
        assert_eq!(tracker.ping_deadline(), None, "no PINGREQ outstanding");

        tracker.observe_at(Beat::from(&rumqttc::Event::Outgoing(Outgoing::PingReq)), t0);
        assert_eq!(tracker.ping_deadline(), Some(t0 + Duration::from_secs(2)));
        assert!(!tracker.check_ping(t0 + Duration::from_millis(1999)));
        assert_eq!(tracker.status(), Status::Up);
        assert!(tracker.check_ping(t0 + Duration::from_secs(2)));
        assert_eq!(tracker.status(), Status::Down);
        assert_eq!(
            tracker.ping_deadline(),
            None,
            "the lost link has no ping outstanding"
        );
    }

    #[test]
    fn an_answered_ping_clears_the_deadline() {
        let events = Events::new();
        let options = MqttOptions::new("a", "127.0.0.1", 1883);
        let mut tracker = ConnectionTracker::from_mqtt_options(&events, &options)
            .with_ping_timeout(Duration::from_millis(100));
        let t0 = Instant::now();
        up(&mut tracker, t0);
        tracker.observe_at(Beat::from(&rumqttc::Event::Outgoing(Outgoing::PingReq)), t0);
        assert_eq!(
            tracker.ping_deadline(),
            Some(t0 + Duration::from_millis(100))
        );
        tracker.observe_at(
            Beat::from(&rumqttc::Event::Incoming(Incoming::PingResp)),
            t0 + Duration::from_millis(1),
        );
        assert_eq!(tracker.ping_deadline(), None);
        assert!(!tracker.check_ping(t0 + Duration::from_secs(9)));
        assert_eq!(tracker.status(), Status::Up);
    }

    /// A host's own v5 loop with a probe: the CONNACK's Server Keep Alive
    /// is in force as with `observe_v5`, and the probe's SUBSCRIBE goes into
    /// that loop's own pending requests, in its v5 shape (the PUBLISHes that
    /// `probe_tick_v5` queues: tests/probe.rs, against a real broker).
    #[test]
    fn observe_in_v5_keeps_the_server_keep_alive_and_queues_the_probe_in_the_v5_loop() {
        use rumqttc::v5::mqttbytes::v5::{
            ConnAck as ConnAck5, ConnAckProperties, ConnectReturnCode as Code5, Packet,
        };
        let events = Events::new();
        let options = rumqttc::v5::MqttOptions::new("a", "127.0.0.1", 1883);
        let mut tracker = ConnectionTracker::from_mqtt5_options(&events, &options)
            .with_probe(&ProbeOptions::new())
            .unwrap();
        let mut eventloop = rumqttc::v5::EventLoop::new(options, 4);
        let properties = ConnAckProperties {
            session_expiry_interval: None,
            receive_max: None,
            max_qos: None,
            retain_available: None,
            max_packet_size: None,
            assigned_client_identifier: None,
            topic_alias_max: None,
            reason_string: None,
            user_properties: Vec::new(),
            wildcard_subscription_available: None,
            subscription_identifiers_available: None,
            shared_subscription_available: None,
            response_information: None,
            server_reference: None,
            authentication_method: None,
            authentication_data: None,
            server_keep_alive: Some(8),
        };
        let connack = rumqttc::v5::Event::Incoming(Packet::ConnAck(ConnAck5 {
            session_present: false,
            code: Code5::Success,
            properties: Some(properties),
        }));
        assert!(!tracker.observe_in_v5(&connack, &mut eventloop));
        assert_eq!(tracker.status(), Status::Up);
        assert_eq!(events.clients()[0].keep_alive, Some(Duration::from_secs(8)));
        assert_eq!(tracker.ping_timeout, Some(Duration::from_secs(4)));
        assert!(
            matches!(&eventloop.pending.front(), Some(rumqttc::v5::Request::Subscribe(s))
            if s.filters[0].path == "mqtt-pulse/probe/a")
        );
    }

    #[test]
    fn a_probe_counts_from_zero_in_the_hub_and_again_after_a_comeback() {
        let events = Events::new();
        let mut tracker = ConnectionTracker::from_mqtt_options(
            &events,
            &MqttOptions::new("a", "127.0.0.1", 1883),
        )
        .with_probe(&ProbeOptions::new())
        .unwrap();
        assert_eq!(events.round_trips().len(), 1, "zeros from the start");
        assert!(
            ProbeOptions::new()
                .with_topic("a/#")
                .problem(Duration::from_secs(5))
                .is_some()
        );
        let mut pending = VecDeque::new();
        let connack = |present| {
            rumqttc::Event::Incoming(Incoming::ConnAck(ConnAck::new(
                ConnectReturnCode::Success,
                present,
            )))
        };
        let t0 = Instant::now();
        assert!(!tracker.observe_in_at(&wire::v311::seen(connack(false)), t0, &mut pending));
        assert!(matches!(pending.front(), Some(Request::Subscribe(_))));
        tracker.terminated();
        assert_eq!(events.round_trips(), vec![]);
        assert_eq!(tracker.probe_wakeup(), None, "nothing more to publish");
        tracker.observe_in_at(&wire::v311::seen(connack(false)), t0, &mut pending);
        let counts = events.round_trips();
        assert_eq!((counts.len(), counts[0].sent), (1, 0));
    }

    #[test]
    fn drops_after_the_client_was_terminated_and_came_back_count_in_a_new_series() {
        let events = Events::new();
        let mut tracker = ConnectionTracker::from_mqtt_options(
            &events,
            &MqttOptions::new("a", "127.0.0.1", 1883),
        );
        let a = ClientId::from("a");
        let t0 = Instant::now();
        up(&mut tracker, t0);
        tracker.publish_dropped();
        tracker.publish_dropped();
        assert_eq!(events.dropped_publishes(), vec![(a.clone(), 2)]);

        tracker.terminated();
        assert_eq!(events.dropped_publishes(), vec![]);
        // The same tracker sees the link up again (a host that keeps polling):
        // its drops must show, from zero, not go to the forgotten counter.
        up(&mut tracker, t0);
        tracker.publish_dropped();
        assert_eq!(events.dropped_publishes(), vec![(a, 1)]);
    }
}
