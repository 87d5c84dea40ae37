//! `mqtt-pulse watch <daemon url>`: follows a running daemon's `GET /events`
//! and prints `ping`'s lines for every client it watches, prefixed with the
//! client id; reconnects when the stream drops; a summary at the end.
//!
//! It owns the subcommand's request (selection, basic auth, TLS trust), its
//! reconnects and its per-client bookkeeping. It must never print or log the
//! password, never talk MQTT (what it shows is the daemon's view), and never
//! retry what retrying cannot fix (refused credentials, a bad selection).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, StatusCode, header};
use base64::Engine as _;
use clap::Args;
use eventsource_stream::Eventsource as _;
use futures_core::Stream;
use hyper::body::{Body as _, Incoming};
use serde::Deserialize;
use url::Url;

use super::DaemonError;
use super::client::connect;
use super::report::{Line, Rtts, say, shown_url};
use crate::connection::{OptionsError, TlsOptions, read_password};

/// The wait before the first reconnect, unless the stream's `retry:` says
/// otherwise: what a browser's `EventSource` waits, give or take.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between reconnects while the daemon stays unreachable.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long a stream may stay silent before it counts as lost: the daemon
/// sends a comment every 15 s, so three missed ones mean a peer that vanished
/// without closing (a cable, a suspended VM) rather than a quiet one.
const IDLE_LIMIT: Duration = Duration::from_secs(45);
/// How long connecting and getting the answer's head may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Flags of `mqtt-pulse watch`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Watch options")]
pub struct WatchArgs {
    /// The daemon: http://host:9883 or https://host:9883 (its /events is
    /// followed; a path prefix before it is kept).
    #[arg(value_name = "URL")]
    pub url: String,

    /// Only this client id [default: every client the daemon watches].
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,

    /// Only these kinds of event: status, ping_response (repeat the flag or
    /// separate them with commas) [default: both].
    #[arg(long, value_name = "KIND", value_delimiter = ',')]
    pub kind: Vec<String>,

    /// User name for the daemon's basic auth (its --web.config.file
    /// basic_auth_users); needs --password-file.
    #[arg(long, value_name = "USER", requires = "password_file")]
    pub username: Option<String>,

    /// File holding the basic-auth password (read at every connect); needs
    /// --username.
    #[arg(long, value_name = "PATH", requires = "username")]
    pub password_file: Option<PathBuf>,

    /// PEM file of the CA certificates to trust for https:// instead of the
    /// system roots.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
}

/// Where and how to ask: everything a connect attempt needs.
struct Target {
    /// The URL as given, for the lines and errors.
    shown: String,
    /// `host:port` to connect to.
    address: String,
    /// The `Host` header.
    host: String,
    /// The name the server's certificate must carry, for https.
    tls: Option<(TlsOptions, String)>,
    /// Path and query of the request.
    path: String,
    credentials: Option<(String, PathBuf)>,
}

impl Target {
    fn new(args: &WatchArgs) -> Result<Self, DaemonError> {
        let parsed = Url::parse(&args.url);
        // What errors and lines show: never a password given in the URL.
        let shown = shown_url(&args.url);
        let bad = |reason: String| DaemonError::Watch {
            url: shown.clone(),
            reason,
        };
        let mut url =
            parsed.map_err(|e| bad(format!("not a URL ({e}); e.g. http://localhost:9883")))?;
        if !url.username().is_empty() || url.password().is_some() {
            // A password on the command line shows in `ps` and the shell's history.
            return Err(bad(
                "credentials in the URL are not used; pass --username and --password-file"
                    .to_owned(),
            ));
        }
        let tls = match url.scheme() {
            "http" => None,
            "https" => Some(()),
            other => {
                return Err(bad(format!(
                    "scheme {other}:// is not served by mqtt-pulse; use http:// or https://"
                )));
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| bad("no host; e.g. http://localhost:9883".to_owned()))?
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        // Url keeps IPv6 hosts in brackets, which is what `host:port` and the
        // Host header want; the TLS server name wants them bare.
        let address = format!("{host}:{port}");
        let server_name = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !url.path().ends_with("/events") {
            let path = format!("{}/events", url.path().trim_end_matches('/'));
            url.set_path(&path);
        }
        url.set_query(None);
        {
            let mut query = url.query_pairs_mut();
            if let Some(client_id) = &args.client_id {
                query.append_pair("client_id", client_id);
            }
            // Ask for what it shows only: a daemon with round-trip probes
            // sends about as many `round_trip` events as pings, which this
            // view would read and drop.
            let kinds = if args.kind.is_empty() {
                SHOWN_KINDS.join(",")
            } else {
                args.kind.join(",")
            };
            query.append_pair("kind", &kinds);
        }
        let path = match url.query() {
            Some(query) if !query.is_empty() => format!("{}?{query}", url.path()),
            _ => url.path().to_owned(),
        };
        let credentials = match (&args.username, &args.password_file) {
            (Some(user), Some(file)) => {
                // Read once now, so a bad file stops the start with its reason.
                read_password(file).map_err(|e| bad(e.to_string()))?;
                Some((user.clone(), file.clone()))
            }
            _ => None,
        };
        Ok(Self {
            shown,
            host: address.clone(),
            address,
            tls: tls.map(|()| {
                let trust = TlsOptions {
                    ca_file: args.ca_file.clone(),
                    ..TlsOptions::default()
                };
                (trust, server_name)
            }),
            path,
            credentials,
        })
    }

    /// `GET /events…`; the password file is read again, so a rotated one is
    /// used at the next reconnect.
    fn request(&self) -> Result<Request<Body>, OptionsError> {
        let mut request = Request::get(&self.path)
            .header(header::HOST, &self.host)
            .header(header::ACCEPT, "text/event-stream");
        if let Some((user, file)) = &self.credentials {
            let password = read_password(file)?;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            // Cannot fail: base64 is visible ASCII.
            if let Ok(mut value) = HeaderValue::from_str(&format!("Basic {token}")) {
                value.set_sensitive(true);
                request = request.header(header::AUTHORIZATION, value);
            }
        }
        Ok(request.body(Body::empty()).expect("a valid request"))
    }
}

/// How one attempt at following the stream ended.
enum Ended {
    /// The daemon could not be reached or did not answer: try again.
    Unreachable(String),
    /// The stream was open and ended or broke: try again.
    Lost(String),
    /// The daemon answered with something retrying cannot change.
    Refused(String),
}

/// Runs `mqtt-pulse watch` until `stop` (SIGINT, SIGTERM), printing to
/// standard output, then prints a summary.
///
/// # Errors
/// [`DaemonError::Watch`] if the URL or a flag is unusable, the daemon
/// refuses the request (credentials, selection), or it was never reached.
pub(super) async fn watch(
    args: WatchArgs,
    stop: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let target = Target::new(&args)?;
    let fail = |reason: String| DaemonError::Watch {
        url: target.shown.clone(),
        reason,
    };
    say(&format!("WATCH {}{}", target.shown, selection(&args)));
    let mut session = Session::new(Instant::now());
    let mut retry = FIRST_RETRY;
    let mut delay = retry;
    tokio::pin!(stop);
    let outcome = loop {
        let ended = tokio::select! {
            () = &mut stop => break Ok(()),
            ended = follow(&target, &mut session, &mut retry) => ended,
        };
        session.disconnected(Instant::now());
        let what = match ended {
            Ended::Refused(reason) => break Err(fail(reason)),
            Ended::Unreachable(reason) => {
                session.last_error = Some(reason.clone());
                format!("unreachable ({reason})")
            }
            Ended::Lost(reason) => {
                // It was up: start the backoff over.
                delay = retry;
                format!("stream lost ({reason})")
            }
        };
        say(&format!(
            "{}: {what}; reconnecting in {}",
            target.shown,
            humantime::format_duration(delay)
        ));
        tokio::select! {
            () = &mut stop => break Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RETRY.max(retry));
    };
    say(&session.summary(&target.shown, Instant::now()));
    match (outcome, session.connects) {
        (Err(error), _) => Err(error),
        (Ok(()), 0) => Err(fail(format!(
            "never connected{}",
            session
                .last_error
                .as_ref()
                .map(|reason| format!(" (last: {reason})"))
                .unwrap_or_default()
        ))),
        (Ok(()), _) => Ok(()),
    }
}

/// `, client id X, kinds a,b` for the first line.
fn selection(args: &WatchArgs) -> String {
    let mut text = String::new();
    if let Some(client_id) = &args.client_id {
        let _ = write!(text, ", client id {client_id}");
    }
    if !args.kind.is_empty() {
        let _ = write!(text, ", kinds {}", args.kind.join(","));
    }
    text
}

/// One connect, and the stream read until it ends. `retry` takes the
/// stream's `retry:` field when it sends one.
async fn follow(target: &Target, session: &mut Session, retry: &mut Duration) -> Ended {
    let request = match target.request() {
        Ok(request) => request,
        Err(error) => return Ended::Unreachable(error.to_string()),
    };
    let tls = target
        .tls
        .as_ref()
        .map(|(trust, name)| (trust, name.as_str()));
    let answer = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let mut sender = connect(&target.address, tls).await?;
        sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let response = match answer {
        Err(_) => {
            return Ended::Unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"));
        }
        Ok(Err(reason)) => return Ended::Unreachable(reason),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if status != StatusCode::OK {
        return refusal(status, target.credentials.is_some(), response.into_body()).await;
    }
    session.connected(Instant::now());
    let mut events = Idle::new(response.into_body()).eventsource();
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut events).poll_next(cx)).await;
        match next {
            None => return Ended::Lost("the daemon ended it".to_owned()),
            Some(Err(error)) => return Ended::Lost(error.to_string()),
            Some(Ok(event)) => {
                if let Some(wait) = event.retry {
                    *retry = wait;
                }
                session.on_event(&event.event, &event.data);
            }
        }
    }
}

/// What an answer other than 200 means for the next attempt.
async fn refusal(status: StatusCode, sent_credentials: bool, body: Incoming) -> Ended {
    match status {
        StatusCode::UNAUTHORIZED if sent_credentials => Ended::Refused(
            "the daemon refused the credentials (401 Unauthorized): check --username and \
             --password-file against its basic_auth_users"
                .to_owned(),
        ),
        StatusCode::UNAUTHORIZED => Ended::Refused(
            "the daemon asks for basic auth (401 Unauthorized): pass --username and --password-file"
                .to_owned(),
        ),
        StatusCode::NOT_FOUND => Ended::Refused(
            "no /events there (404 Not Found): is it an mqtt-pulse with /events?".to_owned(),
        ),
        // Our own `400 …` line names the parameter or kind.
        StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN => {
            let text = short_body(body).await;
            Ended::Refused(format!("the daemon answered {status}: {text}"))
        }
        // 503 (too many streams), 429 (rate limit), anything else: later.
        _ => Ended::Unreachable(format!("answered {status}")),
    }
}

/// The first line of a short error body, without the status the daemon
/// repeats at its start.
async fn short_body(body: Incoming) -> String {
    let mut body = Idle::new(body);
    let mut bytes = Vec::new();
    while bytes.len() < 1024 {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await {
            Some(Ok(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let line = text.lines().next().unwrap_or("").trim();
    let line = line
        .split_once(' ')
        .filter(|(code, _)| code.chars().all(|c| c.is_ascii_digit()))
        .map_or(line, |(_, rest)| rest);
    line.chars().take(200).collect()
}

/// A response body as a stream of its data, ending with an error when no
/// byte has come for [`IDLE_LIMIT`].
struct Idle {
    body: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

/// The error of a stream that stayed silent.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("nothing for {0:?}, not even a keep-alive")]
    Silent(Duration),
}

impl Idle {
    fn new(body: Incoming) -> Self {
        Self {
            body,
            deadline: Box::pin(tokio::time::sleep(IDLE_LIMIT)),
        }
    }
}

impl Stream for Idle {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.deadline
                        .as_mut()
                        .reset(tokio::time::Instant::now() + IDLE_LIMIT);
                    // Trailers carry nothing for us.
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    return match this.deadline.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Silent(IDLE_LIMIT)))),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

/// The JSON `data` of a `status` or `ping_response` event.
#[derive(Debug, Deserialize)]
struct EventData {
    client_id: String,
    status: Option<String>,
    reason: Option<String>,
    rtt_seconds: Option<f64>,
    /// Unix seconds, kept as the daemon wrote it: compared, never computed with.
    at: serde_json::Number,
}

/// The JSON `data` of a `dropped` event.
#[derive(Debug, Deserialize)]
struct Dropped {
    dropped: u64,
    total: u64,
}

/// What the run has seen, and the lines it prints.
#[derive(Debug)]
struct Session {
    started: Instant,
    clients: BTreeMap<String, Client>,
    /// Successful connects (200 answers).
    connects: u64,
    /// Since when the current stream is open.
    connected_since: Option<Instant>,
    time_connected: Duration,
    /// Events the daemon dropped for this reader, as it last said (per
    /// stream, summed over streams).
    dropped: u64,
    dropped_on_this_stream: u64,
    last_error: Option<String>,
}

/// One client's bookkeeping.
#[derive(Debug, Default)]
struct Client {
    /// Its last status and since when, as the daemon wrote them.
    status: Option<(String, String)>,
    rtts: Rtts,
    downs: u64,
}

impl Session {
    fn new(started: Instant) -> Self {
        Self {
            started,
            clients: BTreeMap::new(),
            connects: 0,
            connected_since: None,
            time_connected: Duration::ZERO,
            dropped: 0,
            dropped_on_this_stream: 0,
            last_error: None,
        }
    }

    fn connected(&mut self, now: Instant) {
        self.connects += 1;
        self.connected_since = Some(now);
        self.dropped_on_this_stream = 0;
    }

    fn disconnected(&mut self, now: Instant) {
        if let Some(since) = self.connected_since.take() {
            self.time_connected += now.saturating_duration_since(since);
        }
    }

    fn on_event(&mut self, name: &str, data: &str) {
        match name {
            "status" | "ping_response" => {
                // An event this version cannot read is skipped, not fatal:
                // a newer daemon may add fields or values.
                let Ok(event) = serde_json::from_str::<EventData>(data) else {
                    return;
                };
                self.on_client_event(name, event);
            }
            "dropped" => {
                let Ok(dropped) = serde_json::from_str::<Dropped>(data) else {
                    return;
                };
                self.dropped += dropped.dropped;
                self.dropped_on_this_stream = dropped.total;
                say(&format!(
                    "watch: the daemon dropped {} events for this reader, which fell behind ({} on this stream)",
                    dropped.dropped, dropped.total
                ));
            }
            // Kinds added later (round trips) are not ping's lines yet.
            _ => {}
        }
    }

    fn on_client_event(&mut self, name: &str, event: EventData) {
        let client = self.clients.entry(event.client_id.clone()).or_default();
        let who = event.client_id.as_str();
        if name == "ping_response" {
            let Some(rtt) = event
                .rtt_seconds
                .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
            else {
                return;
            };
            client.rtts.push(rtt);
            let seq = client.rtts.count();
            say(&Line::RoundTrip { seq, rtt }.about(who));
            return;
        }
        let Some(status) = event.status else { return };
        let at = event.at.to_string();
        // After a reconnect the daemon sends every client's present state
        // again: the same status since the same moment is nothing new.
        if client
            .status
            .as_ref()
            .is_some_and(|(known, since)| *known == status && *since == at)
        {
            return;
        }
        let line = match status.as_str() {
            "up" => Line::Up,
            "down" => {
                client.downs += 1;
                Line::Down(event.reason.as_deref())
            }
            other => Line::Status(other),
        };
        say(&line.about(who));
        client.status = Some((status, at));
    }

    fn summary(&mut self, url: &str, now: Instant) -> String {
        self.disconnected(now);
        let total = now.saturating_duration_since(self.started);
        let mut summary = format!("--- {url} watch statistics ---\n");
        let _ = write!(
            summary,
            "{} clients, connected {:.1} s of {:.1} s, {} connects, {} events dropped by the daemon",
            self.clients.len(),
            self.time_connected.as_secs_f64(),
            total.as_secs_f64(),
            self.connects,
            self.dropped,
        );
        for (client_id, client) in &self.clients {
            let status = client
                .status
                .as_ref()
                .map_or("unknown", |(s, _)| s.as_str());
            let _ = write!(
                summary,
                "\n{client_id}: {} round trips, {} downs, {status} at the end",
                client.rtts.count(),
                client.downs,
            );
            if let Some(stats) = client.rtts.stats() {
                let _ = write!(summary, ", {stats}");
            }
        }
        summary
    }
}

/// The kinds of event `watch` prints, and asks for when `--kind` is not given.
const SHOWN_KINDS: [&str; 2] = ["status", "ping_response"];

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> WatchArgs {
        WatchArgs {
            url: url.to_owned(),
            client_id: None,
            kind: Vec::new(),
            username: None,
            password_file: None,
            ca_file: None,
        }
    }

    #[test]
    fn the_daemon_url_becomes_its_events_path_with_the_selection_as_query() {
        let target = Target::new(&args("http://localhost:9883")).unwrap();
        assert_eq!(
            (target.address.as_str(), target.path.as_str()),
            ("localhost:9883", "/events?kind=status%2Cping_response")
        );
        let mut selected = args("https://[::1]:8443/pulse/");
        selected.client_id = Some("plant a&b".to_owned());
        selected.kind = vec!["status".to_owned(), "ping_response".to_owned()];
        let target = Target::new(&selected).unwrap();
        assert_eq!(target.address, "[::1]:8443");
        assert_eq!(target.tls.as_ref().unwrap().1, "::1");
        assert_eq!(
            target.path,
            "/pulse/events?client_id=plant+a%26b&kind=status%2Cping_response"
        );
    }

    #[test]
    fn a_url_it_cannot_use_is_an_error_that_says_what_to_do() {
        let error = |url: &str| Target::new(&args(url)).err().unwrap().to_string();
        assert_eq!(
            error("mqtt://localhost:1883"),
            "watch mqtt://localhost:1883: scheme mqtt:// is not served by mqtt-pulse; use http:// or https://"
        );
        let with_password = error("http://me:s3cret@localhost:9883");
        assert_eq!(
            with_password,
            "watch http://me:xxxxx@localhost:9883/: credentials in the URL are not used; \
             pass --username and --password-file"
        );
    }

    #[test]
    fn a_replayed_present_state_prints_nothing_and_a_new_one_prints_its_line() {
        let mut session = Session::new(Instant::now());
        let status = |status: &str, at: &str| {
            format!(
                r#"{{"client_id":"a","event":"status","status":"{status}","reason":"ping_timeout","at":{at}}}"#
            )
        };
        session.on_event("status", &status("down", "10.5"));
        session.on_event("status", &status("down", "10.5"));
        session.on_event("status", &status("down", "12.0"));
        assert_eq!(session.clients["a"].downs, 2);
        session.on_event(
            "ping_response",
            r#"{"client_id":"a","event":"ping_response","rtt_seconds":0.000153,"at":13.0}"#,
        );
        session.on_event("status", "not json");
        session.on_event("round_trip", "{}");
        assert_eq!(session.clients["a"].rtts.count(), 1);
        let summary = session.summary("http://d", session.started);
        assert!(
            summary.ends_with(
                "\na: 1 round trips, 2 downs, down at the end, rtt min/avg/max/stddev = 0.153/0.153/0.153/0.000 ms"
            ),
            "{summary}"
        );
    }
}
