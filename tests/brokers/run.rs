//! The life cycle every cell of one broker goes through, side by side on
//! one broker process with a listener per transport: up; pings with
//! loopback round trips; a wrong password, a wrong CA and (mutual TLS) no
//! client certificate, each counted as the reason [`expected`] says and
//! never up; frozen (SIGSTOP) → Down by `ping_timeout` within keep-alive +
//! ping timeout of the freeze and one ping timeout after the PINGREQ that
//! went unanswered; thawed → Up; killed → Down with
//! [`Expected::killed`]; restarted → Up. Observed through the library's real
//! outputs: the hub's status and ping events (with each Down's reason) and
//! the Prometheus exporter's page.
//!
//! Cells are checked together and every mismatch is reported at once,
//! naming the cell, so a broker that behaves differently shows its whole
//! row.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mqtt_pulse::connection::{
    Backoff, ClientCertificate, Connection, ConnectionOptions, TlsOptions,
};
use mqtt_pulse::events::{
    ClientFilter, ClientId, Event, EventKind, Events, FailureReason, Message, Status,
};
use mqtt_pulse::exporter::metrics::MetricsBuilder;
use tokio::time::Instant;

use super::matrix::{Cell, KEEP_ALIVE_SECS, Transport, cells, expected, quirks};
use super::wire;
use crate::support::hub::{History, await_each, statuses};
use crate::support::metrics::Metrics;
use crate::support::{TestPki, failures_on_metrics};

/// A broker process the runner may kill, freeze and restart (by its pid).
pub trait Control: Send + Sync + 'static {
    fn kill(&self);
    /// Blocks until the broker serves again.
    fn restart(&self);
    fn pause(&self);
    fn resume(&self);
    /// Its log, for failure messages.
    fn log(&self) -> String;
}

/// One broker under test: the process, the URL of each transport, the one
/// user it accepts, and the CA its certificates come from.
pub struct Subject {
    pub broker: super::matrix::Broker,
    pub control: Arc<dyn Control>,
    pub urls: HashMap<Transport, String>,
    pub user: (&'static str, &'static str),
    pub pki: TestPki,
    /// An unrelated CA: the wrong one.
    pub stranger: TestPki,
}

pub const USER: (&str, &str) = ("probe", "right-horse");
const WRONG_PASSWORD: &str = "Wr0ng-Battery-Staple";

const KEEP_ALIVE: Duration = Duration::from_secs(KEEP_ALIVE_SECS);
/// Well under ¾ of the keep-alive, so that the driver's ping deadline and
/// rumqttc's fallback (¾ K) cannot pass for each other; still far above any
/// loopback round trip.
const PING_TIMEOUT: Duration = Duration::from_millis(KEEP_ALIVE_SECS * 300);
const BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(50),
    max: Duration::from_millis(400),
};
/// Generous: a TLS or WebSocket handshake with a RabbitMQ that was just
/// thawed must not be cut short, and attempts against the frozen broker are
/// only counted, not checked.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// 2100-01-01T00:00:00Z: when every certificate of [`TestPki`] expires.
const TEST_PKI_NOT_AFTER: f64 = 4_102_444_800.0;
/// A loopback round trip above this is not plausible.
const MAX_RTT: Duration = Duration::from_millis(50);

impl Subject {
    fn url(&self, cell: Cell) -> &str {
        self.urls
            .get(&cell.transport)
            .unwrap_or_else(|| panic!("{cell}: no URL"))
    }

    fn client_id(&self, cell: Cell, role: &str) -> ClientId {
        ClientId::from(format!(
            "mqtt-pulse-matrix-{}-{role}-{}",
            cell.tag(),
            std::process::id()
        ))
    }

    /// The right options for `cell`: its URL, the user, our CA, and a client
    /// certificate for mutual TLS.
    fn options(&self, cell: Cell, role: &str) -> ConnectionOptions {
        let mut options = ConnectionOptions::new(self.client_id(cell, role), self.url(cell))
            .unwrap_or_else(|e| panic!("{cell}: {e}"))
            .with_credentials(self.user.0, self.user.1)
            .with_keep_alive(KEEP_ALIVE)
            .with_ping_timeout(PING_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_backoff(BACKOFF);
        if cell.transport.is_tls() {
            options = options.with_tls(TlsOptions {
                ca_file: Some(self.pki.ca_pem_path.clone()),
                client_certificate: (cell.transport == Transport::MutualTls).then(|| {
                    ClientCertificate {
                        cert_file: self.pki.client_cert_path.clone(),
                        key_file: self.pki.client_key_path.clone(),
                    }
                }),
                ..Default::default()
            });
        }
        cell.version.apply(options)
    }

    async fn blocking(&self, what: fn(&dyn Control)) {
        let control = Arc::clone(&self.control);
        tokio::task::spawn_blocking(move || what(&*control))
            .await
            .expect("broker control panicked");
    }
}

/// What went wrong, cell by cell.
#[derive(Default)]
struct Mismatches(Vec<String>);

impl Mismatches {
    /// Records a mismatch of `subject` (a cell, or a broker for its quirks)
    /// unless `ok`.
    fn check(
        &mut self,
        subject: impl std::fmt::Display,
        what: &str,
        ok: bool,
        detail: impl FnOnce() -> String,
    ) {
        if !ok {
            self.0.push(format!("{subject}: {what}: {}", detail()));
        }
    }
}

/// Whether what [`failures_on_metrics`] saw of a refused client (one
/// attempt, its own hub and exporter) is exactly one failure `want`, and
/// `mqtt_client_up` 0.
fn refused_as(seen: &(Vec<(String, f64)>, Option<f64>), want: FailureReason) -> bool {
    seen.0 == [(want.to_string(), 1.0)] && seen.1 == Some(0.0)
}

/// Runs every cell of `subject`'s broker; panics listing each mismatch.
pub async fn run(subject: Subject) {
    let cells = cells(subject.broker);
    let subject = Arc::new(subject);
    let mut mismatches = Mismatches::default();

    // The refusals (each on its own hub) and the wire checks run alongside
    // the life cycle's first part; it awaits them before it freezes the
    // broker.
    let side_checks = {
        let refusals = tokio::spawn({
            let subject = Arc::clone(&subject);
            let cells = cells.clone();
            async move { refusals(&subject, &cells).await }
        });
        let wire = tokio::task::spawn_blocking({
            let subject = Arc::clone(&subject);
            move || wire_checks(&subject)
        });
        async move {
            let mut found = refusals.await.expect("refusals panicked");
            found.0.extend(wire.await.expect("wire checks panicked").0);
            found
        }
    };

    let (lifecycle_cells, outright): (Vec<Cell>, Vec<Cell>) = cells
        .iter()
        .partition(|&&cell| expected(cell).refused.is_none());
    for cell in outright {
        let want = expected(cell).refused.unwrap();
        let seen = failures_on_metrics(subject.options(cell, "refused")).await;
        mismatches.check(cell, "refused", refused_as(&seen, want), || {
            format!("expected one `{want}`, saw {seen:?}")
        });
    }
    let found = lifecycle(&subject, &lifecycle_cells, &mut mismatches, side_checks).await;
    mismatches.0.extend(found.0);

    assert!(
        mismatches.0.is_empty(),
        "{} cell checks failed:\n{}\n--- broker log (tail) ---\n{}",
        mismatches.0.len(),
        mismatches.0.join("\n"),
        tail(&subject.control.log(), 60)
    );
}

/// Wrong password, wrong CA, no client certificate: every cell at once.
async fn refusals(subject: &Arc<Subject>, cells: &[Cell]) -> Mismatches {
    let mut checks = Vec::new();
    for &cell in cells {
        let e = expected(cell);
        if e.refused.is_some() {
            continue;
        }
        let wrong_password = subject
            .options(cell, "wrong-password")
            .with_credentials(subject.user.0, WRONG_PASSWORD);
        checks.push((cell, "wrong password", e.wrong_password, wrong_password));
        if let Some(want) = e.wrong_ca {
            let wrong_ca = subject.options(cell, "wrong-ca").with_tls(TlsOptions {
                ca_file: Some(subject.stranger.ca_pem_path.clone()),
                ..Default::default()
            });
            checks.push((cell, "wrong CA", want, wrong_ca));
        }
        if let Some(want) = e.no_client_certificate {
            let no_certificate = subject.options(cell, "no-cert").with_tls(TlsOptions {
                ca_file: Some(subject.pki.ca_pem_path.clone()),
                ..Default::default()
            });
            checks.push((cell, "no client certificate", want, no_certificate));
        }
    }
    let quirks = quirks(subject.broker);
    if let (Some(path), Some(want)) = (quirks.ws_path, quirks.wrong_ws_path) {
        let cell = cells
            .iter()
            .copied()
            .find(|c| c.transport == Transport::Ws && expected(*c).refused.is_none())
            .expect("a ws cell");
        let url = subject.url(cell).replace(path, "/mqtt");
        let options = ConnectionOptions::new(subject.client_id(cell, "wrong-path"), &url)
            .unwrap()
            .with_credentials(subject.user.0, subject.user.1);
        checks.push((
            cell,
            "ws path other than the broker's",
            want,
            cell.version.apply(options),
        ));
    }
    let running: Vec<_> = checks
        .into_iter()
        .map(|(cell, what, want, options)| {
            (cell, what, want, tokio::spawn(failures_on_metrics(options)))
        })
        .collect();
    let mut mismatches = Mismatches::default();
    for (cell, what, want, check) in running {
        let seen = check.await.expect("a refusal check panicked");
        mismatches.check(cell, what, refused_as(&seen, want), || {
            format!(
                "expected one `{want}` and up 0, saw {:?}, up {:?}",
                seen.0, seen.1
            )
        });
    }
    mismatches
}

/// The life cycle of `cells`; `side_checks` is awaited (and returned)
/// before the broker is frozen.
async fn lifecycle(
    subject: &Subject,
    cells: &[Cell],
    mismatches: &mut Mismatches,
    side_checks: impl std::future::Future<Output = Mismatches>,
) -> Mismatches {
    if cells.is_empty() {
        return side_checks.await;
    }
    let events = Events::new();
    let exporter = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .install()
        .expect("the exporter installs");
    let mut status = events.subscribe_with_capacity(4096);
    status.register(ClientFilter::Any, EventKind::Status);
    let mut pings = events.subscribe_with_capacity(4096);
    pings.register(ClientFilter::Any, EventKind::PingResponse);

    let ids: Vec<ClientId> = cells
        .iter()
        .map(|&c| subject.client_id(c, "life"))
        .collect();
    let cell_of: HashMap<ClientId, Cell> = ids.iter().cloned().zip(cells.iter().copied()).collect();
    let connections: Vec<Connection> = cells
        .iter()
        .map(|&cell| {
            let options = subject.options(cell, "life");
            Connection::start(options, &events).unwrap_or_else(|e| panic!("{cell}: {e}"))
        })
        .collect();
    let mut history = History::new();
    let fail = |history: &History, phase: &str, missing: Vec<ClientId>| {
        unreached(subject, &cell_of, history, phase, &missing)
    };

    // Up.
    if let Err(missing) = await_each(
        &mut status,
        &mut history,
        &ids,
        Status::Up,
        Duration::from_secs(10),
    )
    .await
    {
        fail(&history, "up", missing);
    }

    // Two round trips each, every one plausible. Every ping event is kept
    // (when and how long), for the freeze below.
    let mut rtts: HashMap<ClientId, Vec<(SystemTime, Duration)>> = HashMap::new();
    let keep = |message: Message, rtts: &mut HashMap<ClientId, Vec<(SystemTime, Duration)>>| {
        if let Event::PingResponse(rtt) = message.event {
            rtts.entry(message.client_id)
                .or_default()
                .push((message.at, rtt));
        }
    };
    let deadline = Instant::now() + 4 * KEEP_ALIVE;
    while ids.iter().any(|id| rtts.get(id).map_or(0, Vec::len) < 2) {
        match tokio::time::timeout_at(deadline, pings.recv()).await {
            Ok(Some(message)) => keep(message, &mut rtts),
            _ => break,
        }
    }
    for (id, &cell) in &cell_of {
        let seen: Vec<Duration> = rtts.get(id).into_iter().flatten().map(|p| p.1).collect();
        mismatches.check(cell, "pings", seen.len() >= 2, || {
            format!("{} round trips in {:?}", seen.len(), 4 * KEEP_ALIVE)
        });
        mismatches.check(
            cell,
            "round-trip time",
            seen.iter()
                .all(|rtt| *rtt > Duration::ZERO && *rtt < MAX_RTT),
            || format!("{seen:?}, not all in (0, {MAX_RTT:?})"),
        );
    }

    let found = side_checks.await;

    // Frozen: Down by the ping deadline, within K + P of the freeze (the
    // documented bound) and P after the PINGREQ that went unanswered, which
    // left ¾ K after the last round trip: rumqttc's own fallback (the next
    // PINGREQ finding the first unanswered) would take ¾ K instead of P.
    let frozen = SystemTime::now();
    subject.blocking(|c| c.pause()).await;
    let bound = KEEP_ALIVE + PING_TIMEOUT;
    let deadline_bound = KEEP_ALIVE * 3 / 4 + PING_TIMEOUT + Duration::from_millis(200);
    match await_each(
        &mut status,
        &mut history,
        &ids,
        Status::Down,
        bound + Duration::from_secs(2),
    )
    .await
    {
        Ok(downs) => {
            while let Ok(message) = pings.try_recv() {
                keep(message, &mut rtts);
            }
            for (id, message) in &downs {
                let cell = cell_of[id];
                let last_round_trip = rtts
                    .get(id)
                    .into_iter()
                    .flatten()
                    .map(|p| p.0)
                    .filter(|at| *at <= message.at)
                    .max()
                    .expect("round trips before the freeze");
                let unanswered = message
                    .at
                    .duration_since(last_round_trip)
                    .unwrap_or_default();
                let after = message.at.duration_since(frozen).unwrap_or_default();
                // For the record (`--nocapture`): how the bounds were met.
                eprintln!(
                    "{cell}: frozen → Down {after:?} after the freeze, {unanswered:?} after the last round trip"
                );
                mismatches.check(cell, "frozen → Down by the ping deadline", unanswered <= deadline_bound, || {
                    format!("Down {unanswered:?} after the last round trip, bound ¾ K + P + 200 ms = {deadline_bound:?}")
                });
                mismatches.check(
                    cell,
                    "frozen → Down",
                    message.reason == Some(FailureReason::PingTimeout),
                    || format!("reason {:?}, expected ping_timeout", message.reason),
                );
                mismatches.check(cell, "frozen → Down in time", after <= bound, || {
                    format!("Down {after:?} after the freeze, bound {bound:?}")
                });
            }
        }
        Err(missing) => fail(&history, "frozen → Down", missing),
    }
    subject.blocking(|c| c.resume()).await;
    if let Err(missing) = await_each(
        &mut status,
        &mut history,
        &ids,
        Status::Up,
        Duration::from_secs(10),
    )
    .await
    {
        fail(&history, "thawed → Up", missing);
    }

    // Killed: Down at once, with the reason the broker's end gives.
    subject.blocking(|c| c.kill()).await;
    match await_each(
        &mut status,
        &mut history,
        &ids,
        Status::Down,
        Duration::from_secs(3),
    )
    .await
    {
        Ok(downs) => {
            for (id, message) in &downs {
                let cell = cell_of[id];
                let want = expected(cell).killed;
                mismatches.check(
                    cell,
                    "killed → Down",
                    message.reason == Some(want),
                    || format!("reason {:?}, expected {want}", message.reason),
                );
            }
        }
        Err(missing) => fail(&history, "killed → Down", missing),
    }
    subject.blocking(|c| c.restart()).await;
    if let Err(missing) = await_each(
        &mut status,
        &mut history,
        &ids,
        Status::Up,
        BACKOFF.max + CONNECT_TIMEOUT + Duration::from_secs(2),
    )
    .await
    {
        fail(&history, "restarted → Up", missing);
    }

    // Nothing else happened to any of them, and /metrics says the same.
    let page = Metrics::parse(exporter.render());
    for (id, &cell) in &cell_of {
        let seen = statuses(&history, id);
        use Status::{Down, Up};
        mismatches.check(cell, "statuses", seen == [Up, Down, Up, Down, Up], || {
            format!("{seen:?}")
        });
        let client = id.as_str();
        mismatches.check(cell, "mqtt_client_up", page.up(client) == Some(1.0), || {
            format!("{:?}", page.up(client))
        });
        for (status, count) in [("up", 3.0), ("down", 2.0)] {
            let value = page.status_changes(client, status);
            mismatches.check(
                cell,
                "mqtt_client_status_changes_total",
                value == Some(count),
                || format!("{status}: {value:?}, expected {count}"),
            );
        }
        let failures: HashMap<String, f64> = page.connect_failures(client).into_iter().collect();
        for reason in [FailureReason::PingTimeout, expected(cell).killed] {
            let value = failures.get(reason.as_str()).copied();
            mismatches.check(
                cell,
                "mqtt_client_connect_failures_total",
                value == Some(1.0),
                || format!("{reason}: {value:?}, expected 1 ({failures:?})"),
            );
        }
        let expiry = page.value(
            "mqtt_client_tls_cert_expiry_timestamp_seconds",
            &[("client_id", client)],
        );
        let want = expected(cell).cert_expiry.then_some(TEST_PKI_NOT_AFTER);
        mismatches.check(
            cell,
            "mqtt_client_tls_cert_expiry_timestamp_seconds",
            expiry == want,
            || format!("{expiry:?}, expected {want:?}"),
        );
        let count = page.value(
            "mqtt_client_ping_rtt_seconds_count",
            &[("client_id", client)],
        );
        let seen = rtts.get(id).map_or(0, Vec::len) as f64;
        mismatches.check(
            cell,
            "mqtt_client_ping_rtt_seconds",
            count.is_some_and(|c| c >= seen),
            || format!("count {count:?}, the hub saw {seen} round trips"),
        );
    }

    for connection in connections {
        connection.shutdown().await;
    }
    found
}

/// `host:port` and path of a URL.
fn addr_and_path(url: &str) -> (String, String) {
    let url = url::Url::parse(url).unwrap();
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    (addr, url.path().to_owned())
}

/// What the broker sends, off the wire ([`wire`]), against its [`Quirks`]:
/// a wrong password over TCP and WebSocket, WebSocket paths, and how long
/// it keeps a silent client. Blocking; the checks run on threads of their
/// own, side by side.
fn wire_checks(subject: &Subject) -> Mismatches {
    let broker = subject.broker;
    let want = quirks(broker);
    let (tcp, _) = addr_and_path(&subject.urls[&Transport::Tcp]);
    let (ws, ws_path) = addr_and_path(&subject.urls[&Transport::Ws]);
    let id = |role: &str| format!("mqtt-pulse-wire-{role}-{}", std::process::id());
    let wrong = |role: &str| wire::connect_packet(&id(role), subject.user.0, WRONG_PASSWORD, 60);
    let silent = wire::connect_packet(&id("silent"), subject.user.0, subject.user.1, 1);

    let mut mismatches = Mismatches::default();
    std::thread::scope(|scope| {
        let silence = scope.spawn(|| wire::silence_tolerated(&tcp, &silent));
        let tcp_answer = scope.spawn(|| wire::answer_over_tcp(&tcp, &wrong("wrong-tcp")));
        let ws_answer = scope.spawn(|| wire::answer_over_ws(&ws, &ws_path, &wrong("wrong-ws")));
        let other_path = scope.spawn(|| wire::upgrade(&ws, "/some/other/path").0);

        let seen = tcp_answer.join().unwrap();
        mismatches.check(
            broker.name(),
            "wrong password over TCP",
            seen == want.wrong_password_tcp,
            || format!("answered {seen:?}, expected {:?}", want.wrong_password_tcp),
        );
        let seen = ws_answer.join().unwrap();
        mismatches.check(
            broker.name(),
            "wrong password over WebSocket",
            seen == want.wrong_password_ws,
            || format!("answered {seen:?}, expected {:?}", want.wrong_password_ws),
        );
        let status = other_path.join().unwrap();
        let upgrades_any_path = status == 101;
        mismatches.check(
            broker.name(),
            "WebSocket path",
            upgrades_any_path == want.ws_path.is_none(),
            || {
                format!(
                    "an upgrade for another path got HTTP {status}; expected path {:?}",
                    want.ws_path
                )
            },
        );
        let kept = silence.join().unwrap();
        eprintln!(
            "{}: a silent client (keep-alive 1 s) was dropped after {kept:?}",
            broker.name()
        );
        let (low, high) = want.silence_kept_ms;
        let range = Duration::from_millis(low)..=Duration::from_millis(high);
        mismatches.check(
            broker.name(),
            "silent client (keep-alive 1 s) dropped",
            range.contains(&kept),
            || format!("after {kept:?}, expected {range:?}"),
        );
    });
    mismatches
}

/// Fails the test: `missing` did not reach what `phase` waits for.
fn unreached(
    subject: &Subject,
    cell_of: &HashMap<ClientId, Cell>,
    history: &History,
    phase: &str,
    missing: &[ClientId],
) -> ! {
    let lines: Vec<String> = missing
        .iter()
        .map(|id| format!("{}: {:?}", cell_of[id], statuses(history, id)))
        .collect();
    panic!(
        "{phase}: not reached by\n{}\n--- broker log (tail) ---\n{}",
        lines.join("\n"),
        tail(&subject.control.log(), 60)
    )
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
