//! The matrix itself: which brokers, transports and protocol versions are
//! tested, and what each cell must show. The expectations here are what the
//! runs assert ([`super::run`], [`super::wire`]) and what docs/brokers.md
//! shows ([`table`]): the page cannot claim a cell no test checks.
//!
//! Each version is a `Version` with its `apply`, `label`, tag and
//! expectations in [`expected`] ([`Expected::refused`] for a broker that
//! does not speak it); the runner and the page follow. Regenerate the
//! page's tables after a change (see [`super::docs`]).

use std::fmt;

use mqtt_pulse::connection::{ConnectionOptions, Protocol};
use mqtt_pulse::events::FailureReason;

use super::wire::Answer;

/// A broker of the matrix; each is a real server the tests start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Broker {
    /// Debian's `mosquitto` 2.0.
    Mosquitto,
    /// Debian's `rabbitmq-server` 3.10, MQTT and Web MQTT plugins.
    RabbitMq,
    /// rumqttd 0.20 (the Rust broker), as `examples/rumqttd_broker.rs`.
    Rumqttd,
}

impl Broker {
    pub const ALL: [Broker; 3] = [Broker::Mosquitto, Broker::RabbitMq, Broker::Rumqttd];

    /// As the page names it.
    pub fn name(self) -> &'static str {
        match self {
            Broker::Mosquitto => "Mosquitto 2.0",
            Broker::RabbitMq => "RabbitMQ 3.10",
            Broker::Rumqttd => "rumqttd 0.20",
        }
    }

    /// The transports each broker is run with.
    pub fn transports(self) -> &'static [Transport] {
        use Transport::*;
        match self {
            Broker::Mosquitto => &[Tcp, Tls, MutualTls, Ws, Wss],
            Broker::RabbitMq => &[Tcp, Tls, Ws, Wss],
            Broker::Rumqttd => &[Tcp, Tls, Ws, Wss],
        }
    }
}

/// How the client reaches the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// `mqtt://`
    Tcp,
    /// `mqtts://`, the broker's certificate checked against our CA.
    Tls,
    /// `mqtts://` to a listener that requires a client certificate.
    MutualTls,
    /// `ws://`
    Ws,
    /// `wss://`
    Wss,
}

impl Transport {
    /// Whether the broker presents a certificate the client verifies.
    pub fn is_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::MutualTls | Transport::Wss)
    }

    pub fn label(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP `mqtt://`",
            Transport::Tls => "TLS `mqtts://`",
            Transport::MutualTls => "mutual TLS `mqtts://`",
            Transport::Ws => "WebSocket `ws://`",
            Transport::Wss => "secure WebSocket `wss://`",
        }
    }
}

/// The MQTT protocol version a cell's client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V3_1_1,
    V5,
}

/// Every version each broker is run with.
pub const VERSIONS: [Version; 2] = [Version::V3_1_1, Version::V5];

impl Version {
    pub fn label(self) -> &'static str {
        match self {
            Version::V3_1_1 => "3.1.1",
            Version::V5 => "5",
        }
    }

    /// The client options for this version (3.1.1 is the default).
    pub fn apply(self, options: ConnectionOptions) -> ConnectionOptions {
        match self {
            Version::V3_1_1 => options,
            Version::V5 => options.with_protocol(Protocol::V5),
        }
    }
}

/// One client of the matrix: a broker, a transport, a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell {
    pub broker: Broker,
    pub transport: Transport,
    pub version: Version,
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} / MQTT {} / {}",
            self.broker.name(),
            self.version.label(),
            self.transport.label()
        )
    }
}

impl Cell {
    /// A short tag for client ids: `mosquitto-311-wss`.
    pub fn tag(&self) -> String {
        let broker = match self.broker {
            Broker::Mosquitto => "mosquitto",
            Broker::RabbitMq => "rabbitmq",
            Broker::Rumqttd => "rumqttd",
        };
        let version = match self.version {
            Version::V3_1_1 => "311",
            Version::V5 => "5",
        };
        let transport = match self.transport {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::MutualTls => "mtls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        };
        format!("{broker}-{version}-{transport}")
    }
}

/// Every cell of one broker: its transports times [`VERSIONS`].
pub fn cells(broker: Broker) -> Vec<Cell> {
    broker
        .transports()
        .iter()
        .flat_map(|&transport| {
            VERSIONS.iter().map(move |&version| Cell {
                broker,
                transport,
                version,
            })
        })
        .collect()
}

/// What one cell must show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    /// `Some(reason)`: the broker refuses this client outright (say, a
    /// version it does not speak) — the only check is that it fails with
    /// this reason and is never up. `None`: the whole life cycle runs.
    pub refused: Option<FailureReason>,
    /// The reason of the Down when the broker is killed, which happens
    /// within 10 s of the connect (hence `closed_after_connect`).
    pub killed: FailureReason,
    /// What a wrong password is counted as.
    pub wrong_password: FailureReason,
    /// What a CA that did not sign the broker's certificate is counted as
    /// (TLS transports only).
    pub wrong_ca: Option<FailureReason>,
    /// What connecting without a client certificate to a listener that
    /// requires one is counted as (mutual TLS only).
    pub no_client_certificate: Option<FailureReason>,
    /// Whether `mqtt_client_tls_cert_expiry_timestamp_seconds` shows the
    /// broker chain's `notAfter` (every TLS transport).
    pub cert_expiry: bool,
}

/// The expectation of each cell, as the tests found the brokers to behave.
pub fn expected(cell: Cell) -> Expected {
    let tls = cell.transport.is_tls().then_some(FailureReason::Tls);
    let cert_expiry = cell.transport.is_tls();
    let killed = FailureReason::ClosedAfterConnect;
    match (cell.broker, cell.version) {
        // Mosquitto 2 answers a bad user name or password with CONNACK 5
        // "not authorised", on every listener; Mosquitto 2.0.11 says the
        // same in MQTT 5 (0x87, not 0x86 "bad user name or password").
        (Broker::Mosquitto, _) => Expected {
            refused: None,
            killed,
            wrong_password: FailureReason::NotAuthorized,
            wrong_ca: tls,
            no_client_certificate: (cell.transport == Transport::MutualTls)
                .then_some(FailureReason::Tls),
            cert_expiry,
        },
        // RabbitMQ's MQTT plugin answers CONNACK 4 "bad user name or
        // password"; its Web MQTT plugin closes the WebSocket instead.
        (Broker::RabbitMq, Version::V3_1_1) => Expected {
            refused: None,
            killed,
            wrong_password: match cell.transport {
                Transport::Ws | Transport::Wss => FailureReason::ClosedByBroker,
                _ => FailureReason::BadCredentials,
            },
            wrong_ca: tls,
            no_client_certificate: None,
            cert_expiry,
        },
        // RabbitMQ 3.10 speaks MQTT 3.1.1 only: it closes a v5 CONNECT and
        // answers the 3.1.1 one the client then tries.
        (Broker::RabbitMq, Version::V5) => Expected {
            refused: Some(FailureReason::ProtocolVersion),
            killed,
            wrong_password: FailureReason::ProtocolVersion,
            wrong_ca: None,
            no_client_certificate: None,
            cert_expiry: false,
        },
        // rumqttd closes the connection without a CONNACK.
        (Broker::Rumqttd, Version::V3_1_1) => Expected {
            refused: None,
            killed,
            wrong_password: FailureReason::ClosedByBroker,
            wrong_ca: tls,
            no_client_certificate: None,
            cert_expiry,
        },
        // rumqttd serves MQTT 5 on `[v5.NAME]` listeners only; the example
        // broker opens `[v4.NAME]` and `[ws.NAME]` ones, which close a v5
        // CONNECT.
        (Broker::Rumqttd, Version::V5) => Expected {
            refused: Some(FailureReason::ProtocolVersion),
            killed,
            wrong_password: FailureReason::ProtocolVersion,
            wrong_ca: None,
            no_client_certificate: None,
            cert_expiry: false,
        },
    }
}

/// What a broker does where brokers differ, as read off the wire by
/// [`super::wire`] (MQTT 3.1.1) and counted by the library: the quirks a
/// user meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quirks {
    /// What a wrong password gets over TCP.
    pub wrong_password_tcp: Answer,
    /// ... and over WebSocket.
    pub wrong_password_ws: Answer,
    /// The one path the WebSocket endpoint serves, or `None`: any path.
    pub ws_path: Option<&'static str>,
    /// The HTTP status of an upgrade request for another path (101: it
    /// upgrades).
    pub other_path_status: u16,
    /// What the library counts for a `ws://` URL with another path (only
    /// where `ws_path` is `Some`).
    pub wrong_ws_path: Option<FailureReason>,
    /// How long a client that connected with a keep-alive of 1 s and then
    /// stays silent is kept, in milliseconds: at least the first, at most
    /// the second.
    pub silence_kept_ms: (u64, u64),
}

/// The quirks of each broker (MQTT 3.1.1).
pub fn quirks(broker: Broker) -> Quirks {
    match broker {
        Broker::Mosquitto => Quirks {
            wrong_password_tcp: Answer::Connack(5),
            wrong_password_ws: Answer::Connack(5),
            ws_path: None,
            other_path_status: 101,
            wrong_ws_path: None,
            // 1.5 keep-alives, but Mosquitto 2.0 looks only every few
            // seconds: 4.3 to 6.05 s were seen for a keep-alive of 1 s (and
            // about 6 s for 2 and 3 s); a check up to 5 s after the 1.5 s
            // are up, plus a loaded machine, stays under 8 s.
            silence_kept_ms: (1_400, 8_000),
        },
        Broker::RabbitMq => Quirks {
            wrong_password_tcp: Answer::Connack(4),
            wrong_password_ws: Answer::Closed,
            ws_path: Some(crate::support::rabbitmq::WEB_MQTT_PATH),
            other_path_status: 404,
            wrong_ws_path: Some(FailureReason::Protocol),
            // Three keep-alives, not one and a half.
            silence_kept_ms: (2_900, 3_600),
        },
        Broker::Rumqttd => Quirks {
            wrong_password_tcp: Answer::Closed,
            wrong_password_ws: Answer::Closed,
            ws_path: None,
            other_path_status: 101,
            wrong_ws_path: None,
            silence_kept_ms: (1_400, 2_100),
        },
    }
}

/// The keep-alive the life-cycle clients use, and so the freeze bound.
pub const KEEP_ALIVE_SECS: u64 = 1;

/// The compatibility table of docs/brokers.md, one row per cell, rendered
/// from [`expected`].
pub fn table() -> String {
    let mut t = String::from(
        "| broker | MQTT | transport | up, pings | killed → | restarted | frozen (SIGSTOP) → | wrong password → | wrong CA → | no client certificate → | cert expiry |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let code = |reason: FailureReason| format!("`{reason}`");
    let or_dash = |reason: Option<FailureReason>| reason.map_or_else(|| "—".to_owned(), code);
    for broker in Broker::ALL {
        for cell in cells(broker) {
            let e = expected(cell);
            let row = match e.refused {
                Some(reason) => format!(
                    "| {} | {} | {} | refused: {} | — | — | — | — | — | — | — |\n",
                    broker.name(),
                    cell.version.label(),
                    cell.transport.label(),
                    code(reason)
                ),
                None => format!(
                    "| {} | {} | {} | ✓ | down, {} | up | down, `{}` | {} | {} | {} | {} |\n",
                    broker.name(),
                    cell.version.label(),
                    cell.transport.label(),
                    code(e.killed),
                    FailureReason::PingTimeout,
                    code(e.wrong_password),
                    or_dash(e.wrong_ca),
                    or_dash(e.no_client_certificate),
                    if e.cert_expiry { "✓" } else { "—" },
                ),
            };
            t.push_str(&row);
        }
    }
    t
}

/// The quirks table of docs/brokers.md, one row per broker, rendered from
/// [`quirks`] and [`expected`] (MQTT 3.1.1).
pub fn quirks_table() -> String {
    let mut t = String::from(
        "| broker | wrong password, TCP and TLS | wrong password, WebSocket | WebSocket path | a client silent after connecting with keep-alive 1 s is dropped after |\n\
         |---|---|---|---|---|\n",
    );
    for broker in Broker::ALL {
        let q = quirks(broker);
        let reason = |transport| {
            let cell = Cell {
                broker,
                transport,
                version: Version::V3_1_1,
            };
            expected(cell).wrong_password
        };
        let path = match (q.ws_path, q.wrong_ws_path) {
            (Some(path), Some(reason)) => format!(
                "`{path}` only (another path: HTTP {}, counted as `{reason}`)",
                q.other_path_status
            ),
            (Some(path), None) => {
                format!("`{path}` only (another path: HTTP {})", q.other_path_status)
            }
            (None, _) => "any".to_owned(),
        };
        let (low, high) = q.silence_kept_ms;
        t.push_str(&format!(
            "| {} | {} → `{}` | {} → `{}` | {} | {:.1}–{:.1} s |\n",
            broker.name(),
            q.wrong_password_tcp.describe(),
            reason(Transport::Tcp),
            q.wrong_password_ws.describe(),
            reason(Transport::Ws),
            path,
            low as f64 / 1000.0,
            high as f64 / 1000.0,
        ));
    }
    t
}
