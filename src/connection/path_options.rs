//! [`PathOptions`]: the settings of a broker-to-broker path (issue 15) — its
//! name, the topic its messages cross on, how often one is published, at
//! which QoS, and how long one may take before it counts as lost — their
//! defaults and the one check of them, which the config file words as its
//! own. Plain data: it never touches a connection.

use std::fmt;
use std::time::Duration;

use rumqttc::QoS;

use super::probe::{timing_problem, topic_problem};

/// The topic a path uses unless told otherwise; `{from}` and `{to}` are the
/// client ids of the connection that publishes and the one that receives.
pub const DEFAULT_PATH_TOPIC: &str = "mqtt-pulse/path/{from}/{to}";

/// A broker-to-broker path: messages published through one connection
/// (`from`) to a topic the other (`to`) subscribes to, each measured from its
/// PUBLISH written on `from` to its PUBLISH read on `to`.
///
/// ```
/// use std::time::Duration;
/// use mqtt_pulse::connection::PathOptions;
/// use mqtt_pulse::rumqttc::QoS;
///
/// let path = PathOptions::new("north->south")
///     .with_interval(Duration::from_secs(1))
///     .with_qos(QoS::AtMostOnce);
/// assert_eq!(path.name(), "north->south");
/// assert_eq!(path.topic_for("probe-n", "probe-s"), "mqtt-pulse/path/probe-n/probe-s");
/// assert_eq!(path.timeout(Duration::from_secs(5)), Duration::from_secs(1)); // the interval
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PathOptions {
    name: String,
    topic: String,
    interval: Option<Duration>,
    qos: QoS,
    timeout: Option<Duration>,
}

impl fmt::Debug for PathOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PathOptions")
            .field("name", &self.name)
            .field("topic", &self.topic)
            .field("interval", &self.interval)
            .field("qos", &(self.qos as u8))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl PathOptions {
    /// A path called `name` (the `path` label of its series) with the
    /// defaults: topic [`DEFAULT_PATH_TOPIC`], a message every keep-alive of
    /// the publishing connection, QoS 1, lost when not across within the
    /// interval.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            topic: DEFAULT_PATH_TOPIC.to_owned(),
            interval: None,
            qos: QoS::AtLeastOnce,
            timeout: None,
        }
    }

    /// Sets the topic, where `{from}` and `{to}` stand for the two client
    /// ids. The brokers' ACLs must let `from` publish and `to` subscribe to
    /// it, and the bridge or cluster between them must carry it.
    ///
    /// Defaults to [`DEFAULT_PATH_TOPIC`].
    #[must_use]
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// Sets how often a message is published.
    ///
    /// Defaults to the publishing connection's keep-alive.
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

    /// Sets how long a message may take to cross before it counts as lost.
    ///
    /// Defaults to the interval.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The path's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic as written, placeholders unexpanded.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic between the clients `from` and `to`.
    pub fn topic_for(&self, from: &str, to: &str) -> String {
        self.topic.replace("{from}", from).replace("{to}", to)
    }

    /// The interval when the publishing connection has this keep-alive.
    pub fn interval(&self, keep_alive: Duration) -> Duration {
        self.interval.unwrap_or(keep_alive)
    }

    /// The QoS.
    pub fn qos(&self) -> QoS {
        self.qos
    }

    /// The timeout when the publishing connection has this keep-alive.
    pub fn timeout(&self, keep_alive: Duration) -> Duration {
        self.timeout.unwrap_or_else(|| self.interval(keep_alive))
    }
}

impl PathOptions {
    /// What is wrong with these settings when the publishing connection has
    /// this keep-alive: the key and the reason in words for an error
    /// message; `None` if nothing. The rules are the probe's.
    pub(crate) fn problem(&self, keep_alive: Duration) -> Option<(&'static str, String)> {
        if let Some(problem) = topic_problem(&self.topic) {
            return Some(("topic", problem.replace("the probe", "the path")));
        }
        timing_problem(self.interval(keep_alive), self.timeout(keep_alive))
    }

    /// [`problem`](Self::problem) for the path between the clients `from`
    /// and `to`: also the topic they expand it to (a client id may hold a
    /// `+` or `#`, which would make the topic a filter no one can publish to).
    pub(crate) fn problem_between(
        &self,
        keep_alive: Duration,
        from: &str,
        to: &str,
    ) -> Option<(&'static str, String)> {
        if let Some(problem) = self.problem(keep_alive) {
            return Some(problem);
        }
        let topic = self.topic_for(from, to);
        topic_problem(&topic).map(|problem| {
            let problem = problem.replace("the probe", "the path");
            ("topic", format!("expands to {topic:?}, which {problem}"))
        })
    }
}
