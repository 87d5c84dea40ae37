//! `mqtt-pulse ping <url>`: the MQTT counterpart of `ping` — one connection,
//! one line per event on standard output, a summary at the end, and an exit
//! status scripts can use (0 if the broker was up at the end).
//!
//! It owns the subcommand's output and its statistics. It reuses the library's
//! [`Connection`] and the events hub (a wildcard subscription, as any
//! exporter has); it must never talk MQTT itself, nor keep a second copy of a
//! connection default — every setting not given as a flag is
//! [`ConnectionOptions`]'s.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use super::DaemonError;
use super::report::{Line, Rtts, say, shown_url};
use crate::connection::{ClientCertificate, Connection, ConnectionOptions, Protocol, TlsOptions};
use crate::events::{
    ClientFilter, ClientId, Event, EventKind, Events, FailureReason, Message, Status,
};

/// How often the failure counters are read while the broker is unreachable:
/// a failed attempt while down is a counter in the hub, not an event.
const FAILURE_POLL: Duration = Duration::from_millis(50);

/// Flags of `mqtt-pulse ping`: the target options of the config file.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Ping options")]
// The field docs are `--help` text, written for a terminal, not rustdoc.
#[allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]
pub struct PingArgs {
    /// The broker: mqtt://host[:1883], mqtts://host[:8883], ws://…, wss://…
    /// (a user name and password in the URL are used as credentials).
    #[arg(value_name = "URL")]
    pub url: String,

    /// Stop after this many probes — round trips, unanswered pings and failed
    /// connect attempts together, as ping counts answered and lost packets.
    #[arg(short = 'c', long, value_name = "N")]
    pub count: Option<u64>,

    /// The MQTT client id [default: mqtt-pulse-ping-<pid>].
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,

    /// How often to ping: whole seconds, 1s to 65535s. A PINGREQ goes out
    /// every ¾ of it; one unanswered for half of it is lost.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub keep_alive: Duration,

    /// User name to connect with (instead of the URL's); without
    /// --password-file no password is sent.
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,

    /// File holding the password (read at every connect attempt); needs --username.
    #[arg(long, value_name = "PATH", requires = "username")]
    pub password_file: Option<PathBuf>,

    /// The MQTT version to speak: "3.1.1" or "5" (whose reason codes say why
    /// a broker refused or dropped the connection).
    #[arg(long, value_name = "VERSION", default_value = "3.1.1", value_parser = parse_protocol)]
    pub protocol: Protocol,

    /// PEM file of the CA certificates to trust instead of the system roots.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// PEM file of a client certificate (chain), for mutual TLS; needs --key-file.
    #[arg(long, value_name = "PATH", requires = "key_file")]
    pub cert_file: Option<PathBuf>,

    /// PEM file of the client certificate's private key; needs --cert-file.
    #[arg(long, value_name = "PATH", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
}

impl PingArgs {
    fn options(&self) -> Result<ConnectionOptions, DaemonError> {
        let client_id = self
            .client_id
            .clone()
            .unwrap_or_else(|| format!("mqtt-pulse-ping-{}", std::process::id()));
        let target = |source| DaemonError::Target {
            target: shown_url(&self.url),
            source,
        };
        let mut options = ConnectionOptions::new(client_id, &self.url)
            .map_err(target)?
            .with_keep_alive(self.keep_alive)
            .with_protocol(self.protocol);
        match (&self.username, &self.password_file) {
            (Some(username), Some(path)) => {
                options = options.with_password_file(username.clone(), path.clone());
            }
            (Some(username), None) => options = options.with_login(Some(username.clone()), None),
            _ => {}
        }
        let tls = TlsOptions {
            ca_file: self.ca_file.clone(),
            client_certificate: match (&self.cert_file, &self.key_file) {
                (Some(cert_file), Some(key_file)) => Some(ClientCertificate {
                    cert_file: cert_file.clone(),
                    key_file: key_file.clone(),
                }),
                _ => None,
            },
            insecure_skip_verify: false,
        };
        Ok(options.with_tls(tls))
    }
}

fn parse_protocol(name: &str) -> Result<Protocol, String> {
    Protocol::from_name(name).ok_or_else(|| format!("must be \"3.1.1\" or \"5\", not {name:?}"))
}

/// Runs `mqtt-pulse ping` until `--count` probes or `stop` (SIGINT, SIGTERM),
/// printing to standard output. `Ok(true)` if the broker was up at the end.
///
/// # Errors
/// [`DaemonError::Target`] if the URL or a flag is unusable.
pub(super) async fn ping(
    args: PingArgs,
    stop: impl Future<Output = ()>,
) -> Result<bool, DaemonError> {
    let options = args.options()?;
    let events = Events::new();
    let mut subscription = events.register(ClientFilter::Any, EventKind::Status);
    subscription.register(ClientFilter::Any, EventKind::PingResponse);
    let client_id = options.client_id().clone();
    let broker = options.broker();
    let url = shown_url(&args.url);
    let connection = Connection::start(options, &events).map_err(|source| DaemonError::Target {
        target: url.clone(),
        source,
    })?;
    // The version is named only when it is not the default, so the line
    // of a 3.1.1 ping reads as it always did.
    let version = match args.protocol {
        Protocol::V311 => String::new(),
        other => format!(", MQTT {other}"),
    };
    say(&format!(
        "PING {url} as {client_id}, keep-alive {}{version}",
        humantime::format_duration(args.keep_alive)
    ));

    let mut session = Session::new(broker, Instant::now());
    let mut poll = tokio::time::interval(FAILURE_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    while args.count.is_none_or(|count| session.probes() < count) {
        tokio::select! {
            () = &mut stop => break,
            message = subscription.recv() => match message {
                Some(message) => session.on_message(&message, Instant::now()),
                None => break,
            },
            _ = poll.tick() => session.on_failures(&failures_of(&events, &client_id)),
        }
    }
    // Failures counted since the last poll are probes too.
    session.on_failures(&failures_of(&events, &client_id));
    let now = Instant::now();
    let up = session.status == Status::Up;
    // Unsubscribe first: the Terminating and Terminated of our own
    // disconnect are not the broker's doing.
    drop(subscription);
    connection.shutdown().await;
    say(&session.summary(&url, now));
    Ok(up)
}

fn failures_of(events: &Events, client_id: &ClientId) -> BTreeMap<FailureReason, u64> {
    events
        .failures()
        .into_iter()
        .filter(|failure| &failure.client_id == client_id)
        .map(|failure| (failure.reason, failure.count))
        .collect()
}

/// What the run has seen, and the lines it prints.
#[derive(Debug)]
struct Session {
    broker: String,
    started: Instant,
    status: Status,
    up_since: Option<Instant>,
    time_up: Duration,
    rtts: Rtts,
    /// Failures counted so far, by reason, as printed.
    failures: BTreeMap<FailureReason, u64>,
    downs: u64,
    /// Downs whose failure was a lost connection rather than a lost ping:
    /// among the failures, but neither a lost ping nor a failed connect.
    connections_lost: u64,
}

impl Session {
    fn new(broker: String, started: Instant) -> Self {
        Self {
            broker,
            started,
            status: Status::Down,
            up_since: None,
            time_up: Duration::ZERO,
            rtts: Rtts::default(),
            failures: BTreeMap::new(),
            downs: 0,
            connections_lost: 0,
        }
    }

    /// Round trips, unanswered pings and failed connects.
    fn probes(&self) -> u64 {
        self.rtts.count() + self.failures.values().sum::<u64>()
    }

    fn lost_pings(&self) -> u64 {
        self.failures
            .get(&FailureReason::PingTimeout)
            .copied()
            .unwrap_or(0)
    }

    fn on_message(&mut self, message: &Message, now: Instant) {
        match message.event {
            Event::Status(Status::Up) => {
                self.status = Status::Up;
                self.up_since = Some(now);
                say(&Line::Up.about(&self.broker));
            }
            Event::Status(status) => {
                if let Some(since) = self.up_since.take() {
                    self.time_up += now.saturating_duration_since(since);
                }
                self.status = status;
                if status != Status::Down {
                    return;
                }
                self.downs += 1;
                match message.reason {
                    Some(reason) => {
                        // The failure that took it down is this line; the
                        // counter poll must not print it again.
                        *self.failures.entry(reason).or_insert(0) += 1;
                        if reason != FailureReason::PingTimeout {
                            self.connections_lost += 1;
                        }
                        say(&Line::Down(Some(reason.as_str())).about(&self.broker));
                    }
                    None => say(&Line::Down(None).about(&self.broker)),
                }
            }
            Event::PingResponse(rtt) => {
                self.rtts.push(rtt);
                let seq = self.rtts.count();
                say(&Line::RoundTrip { seq, rtt }.about(&self.broker));
            }
            // `ping` registers for status and ping responses only.
            Event::RoundTrip(_) => {}
        }
    }

    /// Prints each failure counted since the last call: failed connect
    /// attempts while down (a Down's own failure was printed with it).
    fn on_failures(&mut self, counted: &BTreeMap<FailureReason, u64>) {
        for (&reason, &count) in counted {
            let seen = self.failures.entry(reason).or_insert(0);
            for _ in *seen..count {
                let line = if reason == FailureReason::PingTimeout {
                    Line::PingLost(reason.as_str())
                } else {
                    Line::CannotConnect(reason.as_str())
                };
                say(&line.about(&self.broker));
            }
            *seen = (*seen).max(count);
        }
    }

    fn summary(&self, url: &str, now: Instant) -> String {
        let total = now.saturating_duration_since(self.started);
        let time_up = self.time_up
            + self
                .up_since
                .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        let connect_failures =
            self.failures.values().sum::<u64>() - self.lost_pings() - self.connections_lost;
        let mut summary = format!("--- {url} ping statistics ---\n");
        let _ = write!(
            summary,
            "{} round trips, {} lost, {} failed connects, {} downs, up {:.1} s of {:.1} s, {} at the end",
            self.rtts.count(),
            self.lost_pings(),
            connect_failures,
            self.downs,
            time_up.as_secs_f64(),
            total.as_secs_f64(),
            self.status,
        );
        if let Some(stats) = self.rtts.stats() {
            let _ = write!(summary, "\n{stats}");
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn message(event: Event, reason: Option<FailureReason>) -> Message {
        Message {
            client_id: ClientId::from("p"),
            event,
            at: SystemTime::UNIX_EPOCH,
            reason,
        }
    }

    #[test]
    fn a_down_with_its_reason_is_one_probe_and_not_printed_again_by_the_poll() {
        let start = Instant::now();
        let mut session = Session::new("b:1".to_owned(), start);
        session.on_failures(&BTreeMap::from([(FailureReason::ConnectionRefused, 2)]));
        assert_eq!(session.probes(), 2);
        session.on_message(&message(Event::Status(Status::Up), None), start);
        session.on_message(
            &message(Event::PingResponse(Duration::from_micros(200)), None),
            start,
        );
        session.on_message(
            &message(
                Event::Status(Status::Down),
                Some(FailureReason::PingTimeout),
            ),
            start + Duration::from_secs(2),
        );
        session.on_failures(&BTreeMap::from([
            (FailureReason::ConnectionRefused, 2),
            (FailureReason::PingTimeout, 1),
        ]));
        assert_eq!(session.probes(), 4, "two refused, one round trip, one lost");
        assert_eq!(session.lost_pings(), 1);
        let summary = session.summary("mqtt://b:1", start + Duration::from_secs(4));
        assert_eq!(
            summary,
            "--- mqtt://b:1 ping statistics ---\n\
             1 round trips, 1 lost, 2 failed connects, 1 downs, up 2.0 s of 4.0 s, down at the end\n\
             rtt min/avg/max/stddev = 0.200/0.200/0.200/0.000 ms"
        );
    }
}
