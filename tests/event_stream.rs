//! `GET /events` (issue 18): the hub as Server-Sent Events, served by the
//! library's own `Server` on a real socket, fed by real connections to a
//! Mosquitto from the fixture — or, where a test needs more events than a
//! broker makes in a second (the reader that never reads), by the hub's own
//! `dispatch`, which is what a connection calls.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use mqtt_pulse::connection::{Backoff, Connection, ConnectionOptions, ProbeOptions};
use mqtt_pulse::events::{ClientFilter, ClientId, Event, EventKind, Events, Status, Subscription};
use mqtt_pulse::http::{EVENT_STREAM_QUEUE, MAX_EVENT_STREAMS, Server};
use support::Broker;
use support::sse::{self, SseEvent, SseStream};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous for events that come from a broker on a loaded machine.
const WAIT: Duration = Duration::from_secs(10);

const FAST_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(50),
    max: Duration::from_millis(200),
};

fn client_id(test: &str, name: &str) -> ClientId {
    ClientId::from(format!("events-{test}-{name}-{}", std::process::id()))
}

fn connect(events: &Events, url: &str, id: &ClientId) -> Connection {
    let options = ConnectionOptions::new(id, url)
        .unwrap()
        .with_keep_alive(Duration::from_secs(1))
        .with_backoff(FAST_BACKOFF);
    Connection::start(options, events).unwrap()
}

/// `/events` on the hub, served by `server` on a free port until dropped.
struct Serving {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Serving {
    async fn start(events: &Events, server: Server) -> Serving {
        let app = Router::new().route("/events", mqtt_pulse::http::events_route(events));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, app, async {
            let _ = stopped.await;
        }));
        Serving {
            address,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, query: &str) -> String {
        format!("http://{}/events{query}", self.address)
    }

    async fn open(&self, query: &str) -> SseStream {
        let stream = sse::open(&self.url(query), &[]).await;
        assert_eq!(stream.status, 200);
        stream
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Waits on a subscription until every one of `ids` is up, in any order.
async fn until_up(sub: &mut Subscription, ids: &[&ClientId]) {
    let mut waiting: Vec<&ClientId> = ids.to_vec();
    tokio::time::timeout(WAIT, async {
        while !waiting.is_empty() {
            let message = sub.recv().await.unwrap();
            if message.event == Event::Status(Status::Up) {
                waiting.retain(|id| **id != message.client_id);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{ids:?} not all up within {WAIT:?}"));
}

/// The next `status` event of the stream (pings skipped).
async fn next_status(stream: &mut SseStream, limit: Duration) -> SseEvent {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = stream.next(left).await.expect("the stream ended");
        if event.name == "status" {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_present_state_comes_first_with_the_reason_of_a_client_that_cannot_connect() {
    let broker = Broker::start();
    let events = Events::new();
    let mut statuses = events.register(ClientFilter::Any, EventKind::Status);
    let (up, refused) = (client_id("present", "up"), client_id("present", "refused"));
    let _up = connect(&events, &broker.url(), &up);
    until_up(&mut statuses, &[&up]).await;
    // Nothing listens on a port the fixture picked and left free.
    let closed_port = format!("mqtt://127.0.0.1:{}", support::free_port());
    let _refused = connect(&events, &closed_port, &refused);
    // A failed attempt while down is a counter, not an event: poll the hub.
    let has_reason = || {
        events
            .clients()
            .iter()
            .any(|c| c.client_id == refused && c.reason.is_some())
    };
    let polled = async {
        while !has_reason() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, polled)
        .await
        .expect("the refused client has a reason");
    let serving = Serving::start(&events, Server::new()).await;

    let mut stream = serving.open("?kind=status").await;
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    let mut present = Vec::new();
    for _ in 0..2 {
        present.push(stream.next(WAIT).await.unwrap());
    }
    present.sort_by_key(|event| event.field("client_id"));
    let by_id = |id: &ClientId| {
        present
            .iter()
            .find(|event| event.field("client_id").as_deref() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("no present state of {id} in {present:?}"))
    };
    let up_event = by_id(&up);
    assert_eq!(up_event.name, "status");
    assert_eq!(up_event.field("status").as_deref(), Some("up"));
    assert_eq!(up_event.field("reason"), None);
    let since = events
        .clients()
        .into_iter()
        .find(|c| c.client_id == up)
        .unwrap()
        .since;
    let at = up_event.json()["at"].as_f64().unwrap();
    let since = support::unix_seconds(since);
    assert!((at - since).abs() < 1e-5, "at {at} is since {since}");
    let refused_event = by_id(&refused);
    assert_eq!(refused_event.field("status").as_deref(), Some("down"));
    assert_eq!(
        refused_event.field("reason").as_deref(),
        Some("connection_refused")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_shows_as_down_with_its_reason_within_a_second() {
    let broker = Broker::start();
    let events = Events::new();
    let mut statuses = events.register(ClientFilter::Any, EventKind::Status);
    let id = client_id("killed", "a");
    let _connection = connect(&events, &broker.url(), &id);
    until_up(&mut statuses, &[&id]).await;
    let serving = Serving::start(&events, Server::new()).await;
    let mut stream = serving.open("").await;
    let present = next_status(&mut stream, WAIT).await;
    assert_eq!(present.field("status").as_deref(), Some("up"));
    // A ping round trip arrives as its own event, with the RTT in seconds.
    let ping = loop {
        let event = stream.next(WAIT).await.unwrap();
        if event.name == "ping_response" {
            break event;
        }
    };
    assert_eq!(ping.field("client_id").as_deref(), Some(id.as_str()));
    assert!(
        ping.json()["rtt_seconds"].as_f64().unwrap() > 0.0,
        "{ping:?}"
    );

    let killed = Instant::now();
    broker.kill();
    let down = next_status(&mut stream, Duration::from_secs(1)).await;
    let took = killed.elapsed();
    assert_eq!(down.field("client_id").as_deref(), Some(id.as_str()));
    assert_eq!(down.field("status").as_deref(), Some("down"));
    // Up for less than 10 s when killed: `closed_after_connect`; on a machine
    // so loaded that the test took longer, `closed_by_broker`.
    let reason = down.field("reason");
    assert!(
        matches!(
            reason.as_deref(),
            Some("closed_after_connect" | "closed_by_broker")
        ),
        "{down:?}"
    );
    assert!(took < Duration::from_secs(1), "down after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_round_trip_arrives_as_its_own_event_with_seq_outcome_and_rtt() {
    let broker = Broker::start();
    let events = Events::new();
    let mut statuses = events.register(ClientFilter::Any, EventKind::Status);
    let id = client_id("probe", "a");
    let options = ConnectionOptions::new(&id, &broker.url())
        .unwrap()
        .with_keep_alive(Duration::from_secs(1))
        .with_probe(ProbeOptions::new().with_interval(Duration::from_millis(100)));
    let _connection = Connection::start(options, &events).unwrap();
    until_up(&mut statuses, &[&id]).await;
    let serving = Serving::start(&events, Server::new()).await;
    let mut stream = serving.open("?kind=round_trip").await;
    let trip = stream.next(WAIT).await.unwrap();
    assert_eq!(trip.name, "round_trip", "only the kind asked for: {trip:?}");
    let json = trip.json();
    assert_eq!(json["client_id"].as_str(), Some(id.as_str()));
    assert_eq!(json["event"].as_str(), Some("round_trip"));
    assert_eq!(json["outcome"].as_str(), Some("received"), "{trip:?}");
    assert!(json["seq"].as_u64().unwrap() >= 1);
    assert!(json["rtt_seconds"].as_f64().unwrap() > 0.0, "{trip:?}");
    assert!(
        json.get("path").is_none(),
        "a client's own probe names no path"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selecting_one_client_id_shows_only_that_clients_events() {
    let broker = Broker::start();
    let events = Events::new();
    let mut statuses = events.register(ClientFilter::Any, EventKind::Status);
    let (a, b) = (client_id("select", "a"), client_id("select", "b"));
    let _a = connect(&events, &broker.url(), &a);
    let _b = connect(&events, &broker.url(), &b);
    until_up(&mut statuses, &[&a, &b]).await;
    let serving = Serving::start(&events, Server::new()).await;
    let query = format!("?client_id={}", support::http::percent_encode(a.as_str()));
    let mut only_a = serving.open(&query).await;
    let mut every = serving.open("?client_id=*&kind=status").await;

    broker.kill();
    // The wildcard stream sees both go down (after their present state)...
    let mut down = Vec::new();
    while down.len() < 2 {
        let event = next_status(&mut every, WAIT).await;
        if event.field("status").as_deref() == Some("down") {
            down.push(event.field("client_id").unwrap());
        }
    }
    down.sort();
    assert_eq!(down, [a.to_string(), b.to_string()]);
    // ...the selected one, everything of `a` only: present state, pings, down.
    let mut seen = Vec::new();
    loop {
        let event = only_a.next(WAIT).await.unwrap();
        assert_eq!(
            event.field("client_id").as_deref(),
            Some(a.as_str()),
            "{event:?}"
        );
        seen.push(event.name.clone());
        if event.field("status").as_deref() == Some("down") {
            break;
        }
    }
    assert_eq!(seen.first().map(String::as_str), Some("status"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_loses_only_its_own_events_and_they_are_counted() {
    let events = Events::new();
    let serving = Serving::start(&events, Server::new()).await;
    let mut stuck = serving.open("?kind=ping_response").await;
    // Someone else on the same hub, with room for everything.
    let mut other = events.subscribe_with_capacity(4_000_000);
    other.register(ClientFilter::Any, EventKind::PingResponse);

    // Dispatch until the stuck stream's queue overflows: its socket and the
    // client's buffers fill first, then its queue of EVENT_STREAM_QUEUE.
    let dispatching = events.clone();
    let dispatched = tokio::task::spawn_blocking(move || {
        let id = ClientId::from("plant");
        let mut dispatched = 0u64;
        while dispatching.stats(EventKind::PingResponse).dropped == 0 {
            assert!(dispatched < 3_000_000, "nothing dropped");
            for _ in 0..1_000 {
                dispatching.dispatch(&id, Event::PingResponse(Duration::from_micros(250)));
            }
            dispatched += 1_000;
            // Give the server's writer a turn: the stream must be stuck on
            // the socket, not on CPU.
            std::thread::sleep(Duration::from_millis(1));
        }
        dispatched
    })
    .await
    .unwrap();
    let hub = events.stats(EventKind::PingResponse);
    assert_eq!(hub.dispatched, dispatched);
    assert!(hub.dropped > 0);
    let theirs = other.stats();
    assert_eq!(
        (theirs.delivered, theirs.dropped),
        (dispatched, 0),
        "the other subscriber lost nothing"
    );

    // Now read: every event is either received or announced as dropped, and
    // the drops the stream announces are the hub's.
    let (mut received, mut announced, mut last_total) = (0u64, 0u64, 0u64);
    while received + announced < dispatched {
        let event = stuck.next(WAIT).await.expect("the stream ended");
        match event.name.as_str() {
            "ping_response" => received += 1,
            "dropped" => {
                let json = event.json();
                announced += json["dropped"].as_u64().unwrap();
                last_total = json["total"].as_u64().unwrap();
            }
            other => panic!("unexpected event {other}: {event:?}"),
        }
    }
    assert_eq!(received + announced, dispatched);
    assert_eq!(announced, last_total);
    assert_eq!(announced, events.stats(EventKind::PingResponse).dropped);
    assert!(
        received >= EVENT_STREAM_QUEUE as u64,
        "the queue was full before anything was dropped ({received} received)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_cap_are_answered_503_and_a_closed_one_frees_its_place() {
    let events = Events::new();
    let serving = Serving::start(&events, Server::new()).await;
    let mut open = Vec::new();
    for _ in 0..MAX_EVENT_STREAMS {
        open.push(serving.open("?kind=status").await);
    }
    let refused = sse::open(&serving.url(""), &[]).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.headers["retry-after"], "1");
    drop(open.pop());
    // The server notices the closed connection when it next writes to it (or
    // reads its end): wait for the place to come back.
    let reopened = async {
        loop {
            let stream = sse::open(&serving.url(""), &[]).await;
            if stream.status == 200 {
                return stream;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, reopened)
        .await
        .expect("a place freed up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_ends_when_the_server_shuts_down_and_does_not_hold_it() {
    let events = Events::new();
    let mut serving = Serving::start(&events, Server::new()).await;
    let mut stream = serving.open("").await;
    let asked = Instant::now();
    serving.stop.take().unwrap().send(()).unwrap();
    // The body ends (an empty rest: no event was pending), and the server
    // returns long before its 10 s grace period.
    assert_eq!(stream.rest(Duration::from_secs(2)).await, "");
    tokio::time::timeout(Duration::from_secs(2), &mut serving.task)
        .await
        .expect("the server returned")
        .unwrap()
        .unwrap();
    assert!(asked.elapsed() < Duration::from_secs(2));
}

#[cfg(feature = "web-config")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_applies_to_the_stream() {
    use mqtt_pulse::http::WebConfig;
    let dir = support::TempDir::new("events-auth");
    let path = dir.path().join("web.yml");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(&path, format!("basic_auth_users:\n  watcher: {hash}\n")).unwrap();
    let web_config = WebConfig::load(&path).unwrap();
    let events = Events::new();
    events.dispatch(&ClientId::from("plant"), Event::Status(Status::Up));
    let serving = Serving::start(&events, Server::new().with_web_config(web_config)).await;

    let anonymous = sse::open(&serving.url(""), &[]).await;
    assert_eq!(anonymous.status, 401);
    let wrong = support::http::basic("watcher", "wrong");
    let wrong = sse::open(&serving.url(""), &[("authorization", &wrong)]).await;
    assert_eq!(wrong.status, 401);
    let right = support::http::basic("watcher", "s3cret");
    let mut stream = sse::open(&serving.url(""), &[("authorization", &right)]).await;
    assert_eq!(stream.status, 200);
    let present = stream.next(WAIT).await.unwrap();
    assert_eq!(present.field("client_id").as_deref(), Some("plant"));
    assert_eq!(present.field("status").as_deref(), Some("up"));
}

#[tokio::test]
async fn a_query_it_cannot_read_is_answered_400_naming_it() {
    let events = Events::new();
    let serving = Serving::start(&events, Server::new()).await;
    let (status, body) = support::http::get(&serving.url("?kind=pings")).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        "400 unknown kind `pings`; one of status, ping_response, round_trip\n"
    );
}

/// The daemon serves `/events` with the rest, and an open stream does not hold
/// its SIGTERM: it exits well within the 10 s grace period.
#[cfg(feature = "daemon")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_events_and_an_open_stream_does_not_hold_its_shutdown() {
    let broker = Broker::start();
    let dir = support::TempDir::new("events-daemon");
    let config = dir.path().join("mqtt-pulse.toml");
    std::fs::write(
        &config,
        format!(
            "[[target]]\nname = \"plant\"\nurl = \"{}\"\nkeep_alive = \"1s\"\n",
            broker.url()
        ),
    )
    .unwrap();
    let path = dir.path().to_owned();
    let mut daemon = tokio::task::spawn_blocking(move || {
        support::daemon::Daemon::start(
            &path,
            &["--config.file", config.to_str().unwrap()],
            support::http::ready,
        )
    })
    .await
    .unwrap();
    let url = format!("http://127.0.0.1:{}/events?kind=status", daemon.port());
    let mut stream = sse::open(&url, &[]).await;
    assert_eq!(stream.status, 200);
    // The present state, then the changes, until it is up.
    loop {
        let event = next_status(&mut stream, WAIT).await;
        assert_eq!(
            event.field("client_id").as_deref(),
            Some("mqtt-pulse-plant")
        );
        if event.field("status").as_deref() == Some("up") {
            break;
        }
    }
    broker.kill();
    let down = next_status(&mut stream, Duration::from_secs(1)).await;
    assert_eq!(down.field("status").as_deref(), Some("down"));
    assert!(down.field("reason").is_some(), "{down:?}");

    let status = tokio::task::spawn_blocking(move || daemon.terminate(Duration::from_secs(3)))
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}
