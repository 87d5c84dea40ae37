//! The live status page at `/` (issue 18) in a real browser: headless Chromium
//! through chromedriver, the library's own `Server` with a web config (basic
//! auth and a `Content-Security-Policy` that forbids inline script), and real
//! connections to a Mosquitto from the fixture, which the test kills and
//! restarts.
//!
//! Screenshots go to `target/test-output/live_page/` (the path is printed;
//! `cargo test --test live_page -- --nocapture` shows it).
// The web config (basic auth, response headers) is the feature's.
#![cfg(feature = "web-config")]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mqtt_pulse::connection::{Backoff, Connection, ConnectionOptions};
use mqtt_pulse::events::{ClientId, Event, Events, Status};
use mqtt_pulse::exporter::metrics::MetricsBuilder;
use mqtt_pulse::http::{self, Server, WebConfig};
use support::http::{basic, request, send};
use support::webdriver::{ChromeDriver, Session};
use support::{Broker, TempDir};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

const USER: &str = "operator";
const PASSWORD: &str = "watch-it-3f9a21";
/// What an operator who locks the page down sets: nothing inline, nothing
/// from another origin.
const CSP: &str = "default-src 'self'";
/// Generous, for things that wait on a broker or a browser starting.
const WAIT: Duration = Duration::from_secs(20);
/// The promise: a killed broker shows on the page within a second.
const WITHIN_A_SECOND: Duration = Duration::from_secs(1);

const FAST_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(50),
    max: Duration::from_millis(200),
};

/// Where screenshots go: `target/test-output/live_page/`.
fn output_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp has a parent")
        .join("test-output")
        .join("live_page")
}

/// Two clients on the daemon's router behind basic auth and a CSP: one on the
/// fixture broker, one on a port where nothing listens (down, refused).
struct Serving {
    runtime: Runtime,
    address: SocketAddr,
    events: Events,
    on_broker: ClientId,
    refused: ClientId,
    _connections: Vec<Connection>,
    stop: Option<oneshot::Sender<()>>,
    _dir: TempDir,
}

impl Serving {
    /// [`Serving::start`], returned once the hub has plant-a up and plant-b
    /// refused: the state every page test starts from.
    fn settled(broker: &Broker) -> Serving {
        let serving = Serving::start(broker);
        let (a, b) = (&serving.on_broker, &serving.refused);
        wait_until_hub(&serving, "plant-a up, plant-b refused", |s| {
            s.events.status(a.as_str()) == Some(Status::Up)
                && s.events.status(b.as_str()) == Some(Status::Down)
        });
        serving
    }

    fn start(broker: &Broker) -> Serving {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = TempDir::new("live-page");
        let web_config = dir.join("web.yml");
        // The lowest bcrypt cost: the test is about the page, not hashing.
        let hash = bcrypt::hash(PASSWORD, 4).unwrap();
        std::fs::write(
            &web_config,
            format!(
                "basic_auth_users:\n  {USER}: {hash}\nhttp_server_config:\n  headers:\n    \
                 Content-Security-Policy: \"{CSP}\"\n    X-Content-Type-Options: nosniff\n"
            ),
        )
        .unwrap();
        let web_config = WebConfig::load(&web_config).unwrap();
        let pid = std::process::id();
        let on_broker = ClientId::from(format!("live-page-plant-a-{pid}"));
        let refused = ClientId::from(format!("live-page-plant-b-{pid}"));
        let closed_port = format!("mqtt://127.0.0.1:{}", support::free_port());
        let events = Events::new();
        let _guard = runtime.enter();
        let handle = MetricsBuilder::new(&events)
            .with_process_metrics(false)
            .install()
            .unwrap();
        let connections = [(&on_broker, broker.url()), (&refused, closed_port)]
            .into_iter()
            .map(|(id, url)| {
                let options = ConnectionOptions::new(id, &url)
                    .unwrap()
                    .with_keep_alive(Duration::from_secs(1))
                    .with_backoff(FAST_BACKOFF);
                Connection::start(options, &events).unwrap()
            })
            .collect();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        runtime.spawn(Server::new().with_web_config(web_config).serve(
            listener,
            http::with_default_fallbacks(http::router(handle)),
            async {
                let _ = stopped.await;
            },
        ));
        drop(_guard);
        Serving {
            runtime,
            address,
            events,
            on_broker,
            refused,
            _connections: connections,
            stop: Some(stop),
            _dir: dir,
        }
    }

    /// The page's URL with the credentials in it: Chromium sends them for the
    /// page, and then from its auth cache for the page's script, style sheet
    /// and event stream, all on the same origin.
    fn page_url(&self) -> String {
        format!("http://{USER}:{PASSWORD}@{}/", self.address)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Connections end with the runtime.
        let _ = &self.runtime;
    }
}

/// A script that finds `id`'s table row as `row` (undefined when there is
/// none), then runs `body`.
fn with_row(id: &ClientId, body: &str) -> String {
    format!(
        "const row = Array.from(document.querySelectorAll('#clients tbody tr'))\
           .find(r => r.dataset.clientId === {id:?});\
         {body}"
    )
}

/// A script that returns the status cell's text of `id`'s row, or null.
fn status_cell(id: &ClientId) -> String {
    with_row(id, "return row ? row.cells[1].textContent : null;")
}

/// A script that returns whether `id`'s status cell starts with `prefix`.
fn status_is(id: &ClientId, prefix: &str) -> String {
    with_row(
        id,
        &format!("return !!row && row.cells[1].textContent.startsWith({prefix:?});"),
    )
}

/// What a failed wait shows: the table's text.
const TABLE_TEXT: &str = "return document.querySelector('#clients tbody').innerText;";

/// Saves a screenshot as `name`.png in [`output_dir`] and prints its path.
fn screenshot(page: &Session, name: &str) {
    let shot = output_dir().join(format!("{name}.png"));
    page.screenshot(&shot);
    println!("screenshot: {}", shot.display());
}

fn wait_until_hub(serving: &Serving, what: &str, condition: impl Fn(&Serving) -> bool) {
    assert!(
        support::wait_until(WAIT, || condition(serving)),
        "{what} within {WAIT:?}"
    );
}

#[test]
fn the_table_turns_down_and_up_with_the_broker_without_a_reload() {
    let broker = Broker::start();
    let serving = Serving::settled(&broker);
    let (a, b) = (serving.on_broker.clone(), serving.refused.clone());
    let driver = ChromeDriver::start();
    let page = driver.session(true, 1100, 640);
    page.goto(&serving.page_url());

    // The script ran (the CSP allows a same-origin file, not inline code),
    // the stream is open, and a navigation from here on would lose the mark.
    page.wait_for(
        "the page is live",
        WAIT,
        "return document.getElementById('live').className === 'live';",
        "return document.getElementById('live').textContent;",
    );
    page.execute("window.pageLoadMark = 'same page'; return null;");
    assert_eq!(page.execute(&status_cell(&a)), "up");
    assert_eq!(page.execute(&status_cell(&b)), "down (connection_refused)");
    // Round trips arrive live: the sparkline of plant-a gets a line.
    let sparkline = with_row(&a, "return !!row.querySelector('td.spark svg polyline');");
    page.wait_for(
        "plant-a's sparkline has two RTTs",
        WAIT,
        &sparkline,
        TABLE_TEXT,
    );

    broker.kill();
    let took = page.wait_for(
        "plant-a shows down after the broker was killed",
        WITHIN_A_SECOND,
        &status_is(&a, "down ("),
        &status_cell(&a),
    );
    println!("the row showed down {took:?} after the kill");
    // Said in text to a screen reader too, not only in the cell's colour.
    let announced = page.execute("return document.getElementById('changes').textContent;");
    assert!(
        announced
            .as_str()
            .unwrap()
            .contains(&format!("{a} is down")),
        "{announced}"
    );
    assert_eq!(
        page.execute("return document.getElementById('summary').textContent;"),
        "2 clients, 0 up."
    );
    screenshot(&page, "down");

    broker.restart();
    page.wait_for(
        "plant-a shows up after the broker came back",
        WAIT,
        &status_is(&a, "up"),
        &status_cell(&a),
    );
    assert_eq!(
        page.execute("return window.pageLoadMark || 'reloaded';"),
        "same page",
        "the page was reloaded"
    );
    // A few round trips since, for a screenshot with a sparkline worth seeing.
    let points = with_row(
        &a,
        "const line = row.querySelector('td.spark svg polyline');\
         return !!line && line.getAttribute('points').split(' ').length >= 8;",
    );
    page.wait_for(
        "plant-a's sparkline has eight RTTs",
        WAIT,
        &points,
        TABLE_TEXT,
    );
    screenshot(&page, "up");

    // Sorting by status puts the client that is down first; the filter hides
    // what does not match.
    let first_row = "return document.querySelector('#clients tbody tr').dataset.clientId;";
    page.execute("document.querySelectorAll('#clients thead th')[1].querySelector('button').click(); return null;");
    assert_eq!(page.execute(first_row), b.as_str());
    page.execute(
        "const f = document.getElementById('filter'); f.value = 'plant-a';\
         f.dispatchEvent(new Event('input')); return null;",
    );
    let visible = page.execute(
        "return Array.from(document.querySelectorAll('#clients tbody tr'))\
           .filter(r => !r.hidden).map(r => r.dataset.clientId);",
    );
    assert_eq!(visible, serde_json::json!([a.as_str()]));
    page.execute(
        "const f = document.getElementById('filter'); f.value = '';\
         f.dispatchEvent(new Event('input')); return null;",
    );

    // A phone: the page fits the width (the table scrolls inside its box).
    page.set_window_size(390, 760);
    let overflow = page.execute(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
    );
    assert_eq!(overflow, 0, "the page is wider than a phone");
    screenshot(&page, "phone");

    // A client that appears after the page was served gets a row, and its id —
    // text from outside — stays text. (Dispatched on the hub as a connection
    // does: a client id with markup in it is legal MQTT, but no broker is
    // needed to make one up.)
    let hostile = ClientId::from("<img src=x onerror=\"window.pwned=1\">");
    serving.events.dispatch(&hostile, Event::Status(Status::Up));
    page.wait_for(
        "a row for the new client",
        WAIT,
        &status_is(&hostile, "up"),
        TABLE_TEXT,
    );
    let rendered = page.execute(&with_row(
        &hostile,
        "return [row.cells[0].textContent, document.querySelectorAll('#clients img').length,\
                 window.pwned === undefined];",
    ));
    assert_eq!(
        rendered,
        serde_json::json!([hostile.as_str(), 0, true]),
        "the client id was not kept as text"
    );
}

#[test]
fn without_javascript_the_page_is_the_server_rendered_table() {
    let broker = Broker::start();
    let serving = Serving::settled(&broker);
    let (a, b) = (serving.on_broker.clone(), serving.refused.clone());
    let driver = ChromeDriver::start();
    let page = driver.session(false, 1100, 640);
    page.goto(&serving.page_url());
    let row = |id: &ClientId| format!("#clients tr[data-client-id=\"{id}\"] td:nth-child(2)");
    assert_eq!(page.text_of(&row(&a)), "up");
    assert_eq!(page.text_of(&row(&b)), "down (connection_refused)");
    // The script did not run: no sparkline column, the filter stays hidden.
    assert_eq!(
        page.text_of("#clients thead tr"),
        "Client id Status Status since (UTC) Last ping RTT Broker"
    );
    assert!(!page.is_displayed("#filter"));
    screenshot(&page, "no-javascript");
}

#[test]
fn the_script_and_style_sheet_are_behind_basic_auth_with_the_configured_headers() {
    let broker = Broker::start();
    let serving = Serving::start(&broker);
    let port = serving.address.port();
    let right = basic(USER, PASSWORD);
    for (path, content_type) in [
        ("/static/mqtt-pulse.js", "text/javascript; charset=utf-8"),
        ("/static/mqtt-pulse.css", "text/css; charset=utf-8"),
    ] {
        let refused = send(port, &request("GET", path, &[])).unwrap();
        assert_eq!(refused.status, 401, "{path}: {refused:?}");
        let served = send(port, &request("GET", path, &[("Authorization", &right)])).unwrap();
        assert_eq!(served.status, 200, "{path}: {served:?}");
        assert_eq!(served.header("Content-Type"), Some(content_type), "{path}");
        assert_eq!(
            served.header("Content-Security-Policy"),
            Some(CSP),
            "{path}"
        );
        assert_eq!(served.header("X-Content-Type-Options"), Some("nosniff"));
        assert!(!served.body.is_empty());
    }
    let page = send(port, &request("GET", "/", &[("Authorization", &right)])).unwrap();
    assert_eq!(page.header("Content-Security-Policy"), Some(CSP));
    // Nothing inline that the policy would block, nothing from elsewhere.
    assert!(!page.body.contains("<style"), "{}", page.body);
    assert!(!page.body.contains("<script>"), "{}", page.body);
    assert!(!page.body.contains(" style="), "{}", page.body);
    assert!(!page.body.contains("//"), "no absolute URL: {}", page.body);
}
