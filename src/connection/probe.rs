//! [`ProbeOptions`]: the settings of a connection's round-trip probe (issue
//! 15) — the topic it publishes to and subscribes to, how often, at which
//! QoS, and how long a message may take before it counts as lost — their
//! defaults and the one check of them, which the config file words as its
//! own. Plain data: it never touches a connection.

use std::fmt;
use std::time::Duration;

use rumqttc::QoS;

/// The topic a probe uses unless told otherwise; `{client_id}` is the
/// connection's client id.
pub const DEFAULT_PROBE_TOPIC: &str = "mqtt-pulse/probe/{client_id}";

/// The most messages a probe may have waiting for their timeout at once
/// (`timeout / interval`): more would only grow the bookkeeping.
pub const MAX_PROBES_PER_TIMEOUT: u32 = 1_000;

/// The shortest probe interval.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// A round-trip probe over one connection: it subscribes to a topic and
/// publishes a small message to it (never retained) every interval; each
/// message that comes back is a round trip, from its PUBLISH written to its
/// PUBLISH read.
///
/// ```
/// use std::time::Duration;
/// use mqtt_pulse::connection::{ConnectionOptions, ProbeOptions};
/// use mqtt_pulse::rumqttc::QoS;
///
/// let probe = ProbeOptions::new()
///     .with_interval(Duration::from_secs(1))
///     .with_qos(QoS::ExactlyOnce);
/// assert_eq!(probe.topic_for("plant-a"), "mqtt-pulse/probe/plant-a");
/// assert_eq!(probe.timeout(Duration::from_secs(5)), Duration::from_secs(1)); // the interval
///
/// let options = ConnectionOptions::new("plant-a", "mqtt://127.0.0.1:1883")?.with_probe(probe);
/// assert!(options.probe().is_some());
/// # Ok::<(), mqtt_pulse::connection::OptionsError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ProbeOptions {
    topic: String,
    interval: Option<Duration>,
    qos: QoS,
    timeout: Option<Duration>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ProbeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeOptions")
            .field("topic", &self.topic)
            .field("interval", &self.interval)
            .field("qos", &(self.qos as u8))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ProbeOptions {
    /// A probe with the defaults: topic [`DEFAULT_PROBE_TOPIC`], every
    /// keep-alive, QoS 1, a message lost when not back within the interval.
    pub fn new() -> Self {
        Self {
            topic: DEFAULT_PROBE_TOPIC.to_owned(),
            interval: None,
            qos: QoS::AtLeastOnce,
            timeout: None,
        }
    }

    /// Sets the topic, where `{client_id}` stands for the client id. The
    /// broker's ACL must let the client publish and subscribe to it.
    ///
    /// Defaults to [`DEFAULT_PROBE_TOPIC`].
    #[must_use]
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// Sets how often a message is published.
    ///
    /// Defaults to the connection's keep-alive.
    #[must_use]
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// Sets the QoS of the messages and of the subscription.
    ///
    /// Defaults to QoS 1.
    #[must_use]
    pub fn with_qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// Sets how long a message may take to come back before it counts as
    /// lost.
    ///
    /// Defaults to the interval.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The topic as written, `{client_id}` unexpanded.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic of the client `client_id`.
    pub fn topic_for(&self, client_id: &str) -> String {
        self.topic.replace("{client_id}", client_id)
    }

    /// The interval for a connection with this keep-alive.
    pub fn interval(&self, keep_alive: Duration) -> Duration {
        self.interval.unwrap_or(keep_alive)
    }

    /// The QoS.
    pub fn qos(&self) -> QoS {
        self.qos
    }

    /// The timeout for a connection with this keep-alive.
    pub fn timeout(&self, keep_alive: Duration) -> Duration {
        self.timeout.unwrap_or_else(|| self.interval(keep_alive))
    }

    /// What is wrong with these settings for a connection with this
    /// keep-alive, in words for an error message; `None` if nothing.
    pub(crate) fn problem(&self, keep_alive: Duration) -> Option<(&'static str, String)> {
        if let Some(problem) = topic_problem(&self.topic) {
            return Some(("topic", problem));
        }
        let timeout = self.timeout(keep_alive);
        timing_problem(self.interval(keep_alive), timeout).or_else(|| {
            // A zero timeout is never above the interval bound, so checking
            // it after the shared rules reports what it reported before.
            timeout
                .is_zero()
                .then(|| ("timeout", "must be longer than zero".to_owned()))
        })
    }
}

/// The timing rules a probe and a path share: an interval of at least
/// [`MIN_PROBE_INTERVAL`], and a timeout of at most
/// [`MAX_PROBES_PER_TIMEOUT`] intervals (the window of messages in flight).
pub(crate) fn timing_problem(
    interval: Duration,
    timeout: Duration,
) -> Option<(&'static str, String)> {
    if interval < MIN_PROBE_INTERVAL {
        return Some((
            "interval",
            format!("must be at least {MIN_PROBE_INTERVAL:?}"),
        ));
    }
    if timeout > interval * MAX_PROBES_PER_TIMEOUT {
        return Some((
            "timeout",
            format!(
                "must be at most {MAX_PROBES_PER_TIMEOUT} intervals ({:?})",
                interval * MAX_PROBES_PER_TIMEOUT
            ),
        ));
    }
    None
}

impl ProbeOptions {
    /// [`problem`](Self::problem) for the probe of the client `client_id`:
    /// also the topic it expands to (a client id may hold a `+` or `#`,
    /// which would make the topic a filter no one can publish to).
    pub(crate) fn problem_for(
        &self,
        keep_alive: Duration,
        client_id: &str,
    ) -> Option<(&'static str, String)> {
        if let Some(problem) = self.problem(keep_alive) {
            return Some(problem);
        }
        let topic = self.topic_for(client_id);
        topic_problem(&topic)
            .map(|problem| ("topic", format!("expands to {topic:?}, which {problem}")))
    }
}

/// Why `topic` cannot be a probe topic (MQTT 3.1.1 §4.7: a topic name a
/// client publishes to), or `None`.
pub(crate) fn topic_problem(topic: &str) -> Option<String> {
    let problem = if topic.is_empty() {
        "must not be empty"
    } else if topic.contains(['+', '#']) {
        "must not contain the wildcards `+` or `#`: the probe publishes to it"
    } else if topic.starts_with('$') {
        "must not start with `$`: such topics are the broker's"
    } else if topic.contains('\0') {
        "must not contain a NUL character"
    } else if topic.len() > 60_000 {
        // Room for a long client id in `{client_id}` within MQTT's 65,535 bytes.
        "must be at most 60,000 bytes"
    } else {
        return None;
    };
    Some(problem.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP_ALIVE: Duration = Duration::from_secs(5);

    #[test]
    fn a_client_id_that_makes_the_topic_a_filter_is_a_problem_of_the_topic() {
        let probe = ProbeOptions::new();
        assert_eq!(probe.problem_for(KEEP_ALIVE, "plant-a"), None);
        let (key, problem) = probe.problem_for(KEEP_ALIVE, "plant#a").unwrap();
        assert_eq!(key, "topic");
        assert!(
            problem.starts_with("expands to \"mqtt-pulse/probe/plant#a\""),
            "{problem}"
        );
        let written = ProbeOptions::new().with_topic("fixed/topic");
        assert_eq!(
            written.problem_for(KEEP_ALIVE, "plant+a"),
            None,
            "no {{client_id}} in it"
        );
    }

    #[test]
    fn the_defaults_follow_the_keep_alive() {
        let probe = ProbeOptions::new();
        assert_eq!(probe.interval(KEEP_ALIVE), KEEP_ALIVE);
        assert_eq!(probe.timeout(KEEP_ALIVE), KEEP_ALIVE);
        assert_eq!(probe.qos(), QoS::AtLeastOnce);
        assert_eq!(probe.topic_for("a/b"), "mqtt-pulse/probe/a/b");
        assert_eq!(probe.problem(KEEP_ALIVE), None);
    }

    #[test]
    fn a_timeout_follows_its_interval_unless_set() {
        let probe = ProbeOptions::new().with_interval(Duration::from_millis(300));
        assert_eq!(probe.timeout(KEEP_ALIVE), Duration::from_millis(300));
        let probe = probe.with_timeout(Duration::from_secs(2));
        assert_eq!(probe.timeout(KEEP_ALIVE), Duration::from_secs(2));
    }

    #[test]
    fn bad_settings_name_their_key() {
        for (probe, key) in [
            (ProbeOptions::new().with_topic(""), "topic"),
            (ProbeOptions::new().with_topic("a/+/b"), "topic"),
            (ProbeOptions::new().with_topic("a/#"), "topic"),
            (ProbeOptions::new().with_topic("$SYS/x"), "topic"),
            (
                ProbeOptions::new().with_interval(Duration::from_millis(1)),
                "interval",
            ),
            (ProbeOptions::new().with_timeout(Duration::ZERO), "timeout"),
            (
                ProbeOptions::new()
                    .with_interval(Duration::from_millis(10))
                    .with_timeout(Duration::from_secs(11)),
                "timeout",
            ),
        ] {
            assert_eq!(
                probe.problem(KEEP_ALIVE).map(|(key, _)| key),
                Some(key),
                "{probe:?}"
            );
        }
    }
}
