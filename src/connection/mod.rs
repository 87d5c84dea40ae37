//! The connection driver: one tokio task per monitored MQTT connection (3.1.1
//! or 5, on rumqttc's client for each: the `wire` module), reporting `Status`
//! and `PingResponse` events to the hub.
//!
//! It owns the socket, the timers (connect timeout, ping deadline, reconnect
//! backoff) and the shutdown sequence; the protocol bookkeeping lives in the
//! sans-I/O `link` module and the reporting in [`ConnectionTracker`]. It must
//! never block its loop: dispatch is non-blocking, incoming publishes go to a
//! bounded queue with counted drops (or, until an embedder takes that queue,
//! are only counted), so a slow subscriber cannot delay a ping or a reconnect.
//! It sends the PINGREQs itself, early enough (the `keep_alive` module).
//! With a round-trip probe ([`ProbeOptions`]) it also publishes the probe's
//! messages and reads them back (the `prober` module, over the sans-I/O
//! `round_trip` window), woken after the ping's timers so a probe never
//! delays a ping; probe messages never reach the publishes queue.
//! Before each connect attempt it waits for its turn in its broker's
//! [`pacing`] pool (bounded handshakes in flight per broker), cancellable by
//! shutdown; the connect timeout starts with the turn.
//!
//! Lifecycle of the events, as Tortoise311 means them: `Up` when the broker
//! accepts CONNECT; `Down` on any loss (socket error or close, missed PINGRESP —
//! with the reason counted and logged — then reconnect after a backoff, which
//! starts over only once a connection has stayed up for the stable period:
//! see `streak.rs`);
//! `Terminating` then `Terminated` on shutdown. Each only on a change; a
//! refused or failed connect sends nothing (the status stays Down) but is
//! counted by reason.

mod backoff;
mod broker_url;
mod error;
mod expiry;
mod files;
mod keep_alive;
mod labels;
mod link;
mod options;
pub mod pacing;
mod path;
mod path_options;
mod probe;
mod prober;
mod protocol;
mod publishes;
mod round_trip;
mod streak;
mod tls;
mod tracker;
mod wire;

pub use backoff::Backoff;
// What the config file (feature `daemon`) builds its options from.
#[cfg(feature = "daemon")]
pub(crate) use broker_url::BrokerUrl;
pub use error::OptionsError;
#[cfg(feature = "daemon")]
pub use files::MAX_CONFIG_FILE_BYTES;
#[cfg(feature = "daemon")]
pub(crate) use files::{
    FileKind, check_password_file, check_readable, read as read_regular_file, read_password,
};
pub use files::{MAX_PASSWORD_BYTES, MAX_PASSWORD_FILE_BYTES, MAX_PEM_FILE_BYTES, READ_TIMEOUT};
pub use labels::{MAX_LABEL_NAME_LENGTH, MAX_LABEL_VALUE_LENGTH};
#[cfg(feature = "daemon")]
pub(crate) use labels::{label_name_problem, label_value_problem};
pub use options::{ConnectionOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEP_ALIVE};
#[cfg(feature = "daemon")]
pub(crate) use options::{Password, check_keep_alive};
pub use pacing::{DEFAULT_CONNECT_CONCURRENCY, PacingStats};
pub use path::Path;
pub use path_options::{DEFAULT_PATH_TOPIC, PathOptions};
#[cfg(feature = "daemon")]
pub(crate) use probe::topic_problem as probe_topic_problem;
pub use probe::{DEFAULT_PROBE_TOPIC, MAX_PROBES_PER_TIMEOUT, MIN_PROBE_INTERVAL, ProbeOptions};
pub use protocol::Protocol;
pub use publishes::{
    DEFAULT_PUBLISH_BYTES, DEFAULT_PUBLISH_CAPACITY, Publishes, TryRecvPublishError,
};
pub use tls::{ClientCertificate, TlsOptions};
pub use tracker::ConnectionTracker;
// What the daemon prepares a connection from (its files read).
#[cfg(feature = "daemon")]
pub(crate) use wire::Settings;

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, ClientError, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::events::{ClientId, Events, FailureReason, Status};
use crate::sync::lock;
use backoff::Delays;
use keep_alive::PingSchedule;
use path::{PathControl, PathEnds};
use publishes::{Handoff, PublishSink};
use streak::{Notice, Streak};
use wire::{Client, Seen, Wire};

/// How long a shutdown waits for the DISCONNECT packet to be written before
/// closing the socket anyway.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A running, monitored MQTT connection: the handle of its task.
///
/// It is also a usable MQTT client: [`client`](Self::client) publishes through
/// the same connection, [`subscribe`](Self::subscribe) subscribes (and
/// re-subscribes after every reconnect that lost the session), and
/// [`take_publishes`](Self::take_publishes) receives what arrives.
///
/// ```no_run
/// use mqtt_pulse::connection::{Connection, ConnectionOptions};
/// use mqtt_pulse::events::{ClientFilter, Event, EventKind, Events, Status};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let events = Events::new();
/// let mut status = events.register(ClientFilter::Any, EventKind::Status);
///
/// let options = ConnectionOptions::new("probe-1", "mqtt://127.0.0.1:1883")?;
/// let connection = Connection::start(options, &events)?;
/// let up = status.recv().await.unwrap();
/// assert_eq!(up.event, Event::Status(Status::Up));
///
/// connection.shutdown().await; // Terminating, DISCONNECT, Terminated
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Connection {
    client_id: ClientId,
    client: Client,
    events: Events,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// Until [`take_publishes`](Self::take_publishes): the queue's bounds
    /// and the way to hand its sender to the task.
    publishes: Option<Handoff>,
    subscriptions: Arc<Subscriptions>,
    /// The broker's connect pacing pool this connection takes turns in.
    pacing: Option<Arc<pacing::Pool>>,
    /// The keep-alive it announces: a path's default interval.
    keep_alive: Duration,
    /// Where [`Path`]s hand the task their ends.
    paths: mpsc::UnboundedSender<PathControl>,
}

/// The connection's subscriptions and what arrives through them, seen by both
/// the handle (which adds topics and reads the drop count) and the task (which
/// renews the topics after a reconnect and counts the drops).
#[derive(Debug, Default)]
struct Subscriptions {
    /// Every topic subscribed through the handle, to renew after a reconnect
    /// that lost the session.
    topics: Mutex<Vec<(String, QoS)>>,
    /// Incoming publishes dropped: the queue was not taken, or was full.
    dropped_publishes: AtomicU64,
}

impl Connection {
    /// Validates `options` and starts the connection's task on the current
    /// tokio runtime. It connects at once and keeps reconnecting until shut down.
    ///
    /// # Errors
    /// [`OptionsError`] when an option is invalid or a file it names (password,
    /// CA, certificate, key) cannot be used, or when called outside a runtime.
    pub fn start(options: ConnectionOptions, events: &Events) -> Result<Self, OptionsError> {
        let mqtt_options = options.to_mqtt_options()?;
        Self::start_prepared(options, mqtt_options, events)
    }

    /// [`start`](Self::start) with the files already read into `mqtt_options`
    /// (by [`ConnectionOptions::prepare`]), so that starting cannot fail on a
    /// file: a reload reads everything before it stops anything.
    pub(crate) fn start_prepared(
        options: ConnectionOptions,
        mqtt_options: wire::Settings,
        events: &Events,
    ) -> Result<Self, OptionsError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| OptionsError::NoRuntime)?;
        // Our own connect timeout is sub-second capable; rumqttc's (whole
        // seconds) is only a backstop.
        let (client, wire) = wire::open(mqtt_options, options.connect_timeout);

        let tracker = ConnectionTracker::from_options(events, &options);
        let (publish_handoff, publish_sink) =
            publishes::handoff(options.publish_capacity, options.publish_bytes);
        let (shutdown, shutdown_rx) = oneshot::channel();
        let subscriptions = Arc::new(Subscriptions::default());
        let pacing = pacing::join(&options.broker(), options.connect_concurrency());
        // Unbounded, but only paths send, once when they start and once when
        // they stop: config-sized, never traffic-sized.
        let (paths, path_controls) = mpsc::unbounded_channel();
        let keep_alive = options.keep_alive();
        let driver = Driver {
            wire,
            tracker,
            client: client.clone(),
            publishes: publish_sink,
            subscriptions: Arc::clone(&subscriptions),
            delays: Delays::new(options.backoff),
            streak: Streak::default(),
            pings: PingSchedule::new(options.keep_alive()),
            broker: options.broker(),
            options: options.clone(),
            pacing: pacing.clone(),
            turn: None,
            paths: PathEnds::default(),
            path_controls,
        };
        let task = runtime.spawn(driver.run(shutdown_rx));
        Ok(Self {
            client_id: options.client_id,
            client,
            events: events.clone(),
            shutdown: Some(shutdown),
            task: Some(task),
            publishes: Some(publish_handoff),
            subscriptions,
            pacing,
            keep_alive,
            paths,
        })
    }

    /// The keep-alive this connection announces.
    pub fn keep_alive(&self) -> Duration {
        self.keep_alive
    }

    /// Where a [`Path`] hands this connection's task its end.
    pub(crate) fn path_control(&self) -> mpsc::UnboundedSender<PathControl> {
        self.paths.clone()
    }

    /// What the connect pacing of this connection's broker has seen (shared
    /// with every connection of the process to that broker with the same
    /// limit; see [`ConnectionOptions::with_connect_concurrency`]); `None`
    /// when pacing is off.
    pub fn pacing(&self) -> Option<PacingStats> {
        self.pacing.as_ref().map(|pool| pool.stats())
    }

    /// The client id this connection uses.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    /// Its current status, as the hub knows it.
    pub fn status(&self) -> Status {
        self.events
            .status(self.client_id.as_str())
            .unwrap_or(Status::Terminated)
    }

    /// The rumqttc client of this connection, to publish through it: `None`
    /// for an MQTT 5 connection (see [`client_v5`](Self::client_v5)).
    pub fn client(&self) -> Option<&AsyncClient> {
        match &self.client {
            Client::V311(client) => Some(client),
            Client::V5(_) => None,
        }
    }

    /// The rumqttc MQTT 5 client of this connection, to publish through it:
    /// `None` for an MQTT 3.1.1 connection (see [`client`](Self::client)).
    pub fn client_v5(&self) -> Option<&rumqttc::v5::AsyncClient> {
        match &self.client {
            Client::V5(client) => Some(client),
            Client::V311(_) => None,
        }
    }

    /// Subscribes to `topic`; the subscription is renewed after each reconnect
    /// in which the broker did not keep the session.
    ///
    /// # Errors
    /// [`ClientError`] if the connection's task has ended (for an MQTT 5
    /// connection it carries the 3.1.1 form of the subscribe request).
    pub async fn subscribe(&self, topic: impl Into<String>, qos: QoS) -> Result<(), ClientError> {
        let topic = topic.into();
        self.client.subscribe(topic.clone(), qos).await?;
        lock(&self.subscriptions.topics).push((topic, qos));
        Ok(())
    }

    /// The receiver of incoming PUBLISH packets (once; `None` afterwards). The
    /// queue exists from this call on: until then — and for ever in a monitor
    /// that never calls it — incoming publishes are dropped and counted in
    /// [`dropped_publishes`](Self::dropped_publishes), so a broker pushing
    /// what nobody reads costs no memory. Call it before subscribing. It holds
    /// up to the configured count and bytes
    /// ([`ConnectionOptions::with_publish_capacity`],
    /// [`ConnectionOptions::with_publish_byte_limit`]); more are dropped and
    /// counted, never waited for.
    pub fn take_publishes(&mut self) -> Option<Publishes> {
        Some(self.publishes.take()?.open())
    }

    /// Incoming publishes dropped: nobody took the queue, or it was full.
    pub fn dropped_publishes(&self) -> u64 {
        self.subscriptions.dropped_publishes.load(Ordering::Relaxed)
    }

    /// Shuts the connection down: reports `Terminating`, sends DISCONNECT (so
    /// the broker publishes no last will), closes the socket, reports
    /// `Terminated`, and returns when the task has ended.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            // A panicked driver already reported Terminated through the
            // tracker's Drop; there is nothing more to do with the error.
            let _ = task.await;
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Dropping the sender tells the task to shut down gracefully on its own.
        self.shutdown.take();
    }
}

/// The keep-alive the driver pings by, with `asked` in the CONNECT and
/// `in_force` after the CONNACK: the broker's when it is shorter (MQTT 5's
/// Server Keep Alive must be obeyed), ours when the broker's is longer or
/// zero (none enforced) — PINGREQ may be sent at any time, and a monitor
/// that stopped pinging would stop measuring and notice a dead broker late.
fn pinging_keep_alive(asked: Duration, in_force: Duration) -> Duration {
    if in_force.is_zero() {
        asked
    } else {
        in_force.min(asked)
    }
}

/// The task's state: the event loop and everything that reacts to it.
struct Driver {
    wire: Wire,
    tracker: ConnectionTracker,
    client: Client,
    publishes: PublishSink,
    subscriptions: Arc<Subscriptions>,
    delays: Delays,
    streak: Streak,
    pings: PingSchedule,
    /// `options.broker()`, for log lines.
    broker: String,
    /// To read the password and TLS files again before each reconnect.
    options: ConnectionOptions,
    /// The broker's connect pacing pool; `None` when unpaced.
    pacing: Option<Arc<pacing::Pool>>,
    /// This connection's turn to handshake, held from before the TCP connect
    /// until CONNACK or the attempt's failure.
    turn: Option<pacing::Permit>,
    /// The ends of the broker-to-broker paths on this connection.
    paths: PathEnds,
    /// Paths starting and stopping.
    path_controls: mpsc::UnboundedReceiver<PathControl>,
}

enum Step {
    Shutdown,
    PingTimeout,
    PingDue,
    /// A probe message is due or one times out.
    Probe,
    /// A path message is due or one times out.
    PathTick,
    /// A path starts or stops on this connection.
    PathControl(PathControl),
    ConnectTimeout,
    Polled(Result<Seen, wire::Failure>),
}

impl Driver {
    async fn run(mut self, mut shutdown: oneshot::Receiver<()>) {
        let mut connected_before = false;
        loop {
            let up = self.tracker.status() == Status::Up;
            let step = self.next_step(up, &mut shutdown).await;
            // A handshake in this step verified the broker's chain: into the
            // hub before the `Up` it may lead to, so a subscriber that sees
            // `Up` over TLS finds the expiry there.
            if let Some(not_after) = self.options.chain_expiry.take() {
                self.tracker.tls_chain_verified(not_after);
            }
            let failure = match step {
                Step::Shutdown => break,
                Step::Polled(Ok(seen)) => {
                    let now = std::time::Instant::now();
                    if let Seen::ConnAck {
                        server_keep_alive, ..
                    } = seen
                    {
                        // The handshake is done: the next connection in line
                        // may start. Before the `Up`, so that whoever sees it
                        // finds the turn given back (and the keep-alive in
                        // force in the hub).
                        self.turn = None;
                        self.keep_alive_in_force(server_keep_alive, now);
                    }
                    let pending = self.wire.pending();
                    if let Seen::ConnAck {
                        session_present, ..
                    } = seen
                    {
                        self.paths.connected(now, session_present, pending);
                    }
                    let probe_message = self.tracker.observe_in_at(&seen, now, pending)
                        || self.paths.observe(&seen, now, pending);
                    if !probe_message {
                        self.on_event(seen, now, &mut connected_before);
                    }
                    None
                }
                Step::Polled(Err(failure)) => failure.reason.map(|reason| {
                    let reason = self.tracker.observe_failure(reason, &failure.detail);
                    (reason, failure.detail)
                }),
                Step::PingTimeout => {
                    let limit = self.options.ping_timeout();
                    self.tracker.ping_timed_out();
                    Some((
                        FailureReason::PingTimeout,
                        format!("no PINGRESP within {limit:?}"),
                    ))
                }
                Step::PingDue => {
                    // Written by the next poll, which yields Seen::PingReq
                    // once it is flushed: the round trip starts there.
                    self.wire.request_ping();
                    self.pings.requested();
                    None
                }
                Step::Probe => {
                    let now = std::time::Instant::now();
                    self.tracker.probe_tick_at(now, self.wire.pending());
                    None
                }
                Step::PathTick => {
                    let now = std::time::Instant::now();
                    self.paths.tick(now, self.wire.pending());
                    None
                }
                Step::PathControl(control) => {
                    let now = std::time::Instant::now();
                    self.paths.control(control, now, self.wire.pending());
                    None
                }
                Step::ConnectTimeout => {
                    let limit = self.options.connect_timeout();
                    self.tracker.connect_timed_out(limit);
                    Some((
                        FailureReason::Timeout,
                        format!("not connected within {limit:?}"),
                    ))
                }
            };
            // Boxed, as `terminate` below: neither is on the steady path,
            // and inline their futures would add to the size of every
            // connection's task for its whole life (`wire`'s module doc).
            if let Some((reason, detail)) = failure
                && Box::pin(self.recover(reason, up, &detail, &mut shutdown))
                    .await
                    .is_break()
            {
                break;
            }
        }
        Box::pin(self.terminate()).await;
    }

    /// Polls the event loop until something happens: an event or error, the
    /// ping deadline, a ping falling due, the connect timeout, or shutdown.
    async fn next_step(&mut self, up: bool, shutdown: &mut oneshot::Receiver<()>) -> Step {
        if !up {
            // Wait for a turn before the attempt starts, so that the connect
            // timeout below measures the handshake, not the queue: a queued
            // connection has not failed, it stays as it is (Down) and counts
            // nothing. Shutdown cancels the wait.
            if self.turn.is_none()
                && let Some(pool) = &self.pacing
            {
                tokio::select! {
                    biased;
                    _ = &mut *shutdown => return Step::Shutdown,
                    turn = pool.acquire() => self.turn = Some(turn),
                }
            }
            // The CONNECT announces the keep-alive (rumqttc's timer was
            // turned off while connected, see `on_event`).
            self.wire.announce_keep_alive(self.options.keep_alive());
        }
        let ping_deadline = self.tracker.ping_deadline().map(Instant::from_std);
        let ping_due = self.pings.due().map(Instant::from_std);
        let probe_wakeup = self.tracker.probe_wakeup().map(Instant::from_std);
        let path_wakeup = self.paths.wakeup().map(Instant::from_std);
        // Until the broker accepts CONNECT, the whole attempt is bounded by the
        // connect timeout; once up, the ping deadline watches the link.
        let connect_timeout = (!up).then(|| self.options.connect_timeout());
        let wire = &mut self.wire;
        let poll = async move {
            match connect_timeout {
                Some(limit) => match timeout(limit, wire.poll()).await {
                    Err(_) => Step::ConnectTimeout,
                    // A handshake that failed may deserve a second look
                    // (an MQTT 5 CONNECT to a 3.1.1 broker), within its own
                    // connect timeout; shutdown still cancels it.
                    Ok(Err(failure)) => {
                        Step::Polled(Err(wire.second_opinion(failure, limit).await))
                    }
                    Ok(polled) => Step::Polled(polled),
                },
                None => Step::Polled(wire.poll().await),
            }
        };
        tokio::select! {
            biased;
            _ = shutdown => Step::Shutdown,
            _ = sleep_until(ping_deadline.unwrap_or_else(Instant::now)), if ping_deadline.is_some() => {
                Step::PingTimeout
            }
            // Cancels a poll that is waiting for the network or a request:
            // rumqttc's reads and request intake are cancel-safe, and a
            // write it had begun stays in its buffer for the next flush.
            _ = sleep_until(ping_due.unwrap_or_else(Instant::now)), if ping_due.is_some() => {
                Step::PingDue
            }
            // After the ping arms: a probe never delays a ping.
            _ = sleep_until(probe_wakeup.unwrap_or_else(Instant::now)), if probe_wakeup.is_some() => {
                Step::Probe
            }
            _ = sleep_until(path_wakeup.unwrap_or_else(Instant::now)), if path_wakeup.is_some() => {
                Step::PathTick
            }
            Some(control) = self.path_controls.recv() => Step::PathControl(control),
            step = poll => step,
        }
    }

    /// After a failure: note it, drop the socket, wait out the backoff, and
    /// read the secret and certificate files again for the next attempt.
    /// `Break` when shutdown came meanwhile.
    async fn recover(
        &mut self,
        reason: FailureReason,
        was_up: bool,
        detail: &str,
        shutdown: &mut oneshot::Receiver<()>,
    ) -> ControlFlow<()> {
        // The attempt is over: the next connection in line may start its own
        // while this one waits out its backoff.
        self.turn = None;
        self.pings.lost();
        self.paths.lost();
        self.note_failure(reason, was_up, detail);
        // Drop the socket (if any) so the next poll reconnects from scratch.
        self.wire.clean();
        let delay = self.delays.next_delay();
        tokio::select! {
            biased;
            _ = &mut *shutdown => return ControlFlow::Break(()),
            _ = sleep(delay) => {}
        }
        // Rotated secrets and certificates count from the next attempt.
        let files = self.options.reread_files(self.wire.settings_mut());
        let reread = tokio::select! {
            biased;
            _ = shutdown => return ControlFlow::Break(()),
            reread = files => reread,
        };
        if let Err(error) = reread {
            tracing::warn!(
                client_id = %self.tracker.client_id(),
                %error,
                "cannot read the files to connect with; trying with what was read before"
            );
        }
        ControlFlow::Continue(())
    }

    /// Starts the backoff over after an established connection, and logs
    /// what a user must see at the default level (see [`streak`]).
    fn note_failure(&mut self, reason: FailureReason, was_up: bool, detail: &str) {
        let failure = self
            .streak
            .failed(reason, was_up, std::time::Instant::now());
        if failure.new_streak {
            self.delays.reset();
        }
        let (client_id, broker) = (self.tracker.client_id(), &self.broker);
        match failure.notice {
            Notice::First => tracing::warn!(
                %client_id, %broker, %reason, error = %detail,
                "cannot connect; retrying with backoff"
            ),
            Notice::Reminder { failures, since } => tracing::warn!(
                %client_id, %broker, %reason, error = %detail, failures,
                since = ?since,
                "still cannot connect"
            ),
            Notice::ClosedAfterConnect => tracing::warn!(
                %client_id, %broker, %reason,
                likely_causes = "another client with the same client id; an ACL or policy kick; a load balancer's idle cut",
                "the broker closes the connection right after accepting it; retrying with backoff"
            ),
            Notice::Quiet => {}
        }
    }

    /// The broker accepted the CONNECT at `now`, imposing `server_keep_alive`
    /// (MQTT 5) or not: the hub records the keep-alive in force, and the ping
    /// schedule and deadline follow `pinging_keep_alive`.
    fn keep_alive_in_force(
        &mut self,
        server_keep_alive: Option<Duration>,
        now: std::time::Instant,
    ) {
        let asked = self.options.keep_alive();
        let in_force = server_keep_alive.unwrap_or(asked);
        if in_force != asked {
            tracing::info!(
                client_id = %self.tracker.client_id(), broker = %self.broker,
                asked = ?asked, imposed = ?in_force,
                "the broker imposes its own keep-alive (MQTT 5 Server Keep Alive)"
            );
        }
        let pinging = pinging_keep_alive(asked, in_force);
        self.pings = PingSchedule::new(pinging);
        self.pings.connected(now);
        let ping_timeout = self.options.ping_timeout_for(pinging);
        self.tracker.keep_alive_in_force(in_force, ping_timeout);
    }

    fn on_event(&mut self, seen: Seen, now: std::time::Instant, connected_before: &mut bool) {
        match seen {
            Seen::ConnAck {
                session_present, ..
            } => {
                // From now on the driver sends the PINGREQs, early enough
                // (keep_alive.rs; the schedule started in
                // `keep_alive_in_force`): rumqttc's own timer goes quiet.
                self.wire.connected();
                if let Some((failures, since)) = self.streak.connected(now) {
                    tracing::info!(
                        client_id = %self.tracker.client_id(), broker = %self.broker,
                        failures, since = ?since,
                        "connected after failed attempts"
                    );
                }
                if *connected_before && !session_present {
                    self.resubscribe();
                }
                *connected_before = true;
            }
            Seen::PingReq => self.pings.ping_written(now),
            Seen::Publish(publish) => self.forward(publish),
            _ => {}
        }
    }

    /// Hands an incoming publish to the handle's queue; never waits for room.
    /// A drop is counted on the handle and in the hub, which the exporters
    /// read (`mqtt_client_publishes_dropped_total`).
    fn forward(&mut self, publish: rumqttc::Publish) {
        if !self.publishes.offer(publish) {
            self.subscriptions
                .dropped_publishes
                .fetch_add(1, Ordering::Relaxed);
            self.tracker.publish_dropped();
        }
    }

    fn resubscribe(&self) {
        let topics = lock(&self.subscriptions.topics).clone();
        if topics.is_empty() {
            return;
        }
        if let Err(error) = self.client.try_subscribe_many(topics) {
            tracing::warn!(client_id = %self.tracker.client_id(), %error, "could not renew subscriptions");
        }
    }

    async fn terminate(mut self) {
        let was_up = self.tracker.status() == Status::Up;
        self.tracker.terminating();
        self.paths.lost();
        if was_up && self.client.try_disconnect() {
            let flushed = timeout(DISCONNECT_TIMEOUT, async {
                loop {
                    match self.wire.poll().await {
                        Ok(Seen::Disconnect) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            if flushed.is_err() {
                tracing::debug!(client_id = %self.tracker.client_id(), "DISCONNECT not written in time");
            }
        }
        // Closing the socket before reporting Terminated: a subscriber that sees
        // Terminated may rely on the connection being gone.
        drop(self.wire);
        self.tracker.terminated();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_pings_within_a_shorter_server_keep_alive_and_keeps_its_own_otherwise() {
        let s = Duration::from_secs;
        assert_eq!(
            pinging_keep_alive(s(30), s(10)),
            s(10),
            "the broker's, shorter"
        );
        assert_eq!(pinging_keep_alive(s(5), s(5)), s(5));
        assert_eq!(pinging_keep_alive(s(5), s(600)), s(5), "ours, shorter");
        assert_eq!(
            pinging_keep_alive(s(5), Duration::ZERO),
            s(5),
            "none enforced"
        );
    }
}
