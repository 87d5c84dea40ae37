//! The web config (`--web.config.file`, the Prometheus exporter-toolkit
//! format) and the server's limits, with real parts: real TLS handshakes by a
//! rustls client (and the real `curl`), bcrypt hashes made here with the
//! `bcrypt` crate, the real binary for startup errors and for one daemon end
//! to end.
//!
//! In-process servers listen on port 0 and the daemon on a free port; no
//! test waits a fixed time for anything. The only sleeps are the slow-loris
//! client's own pace (one byte a second), which is what is under test.
// The real binary and the daemon's config files: skipped without the feature.
#![cfg(feature = "daemon")]

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod client;
mod daemon;
mod files;
mod flood;
mod limits;
mod tls;

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use mqtt_pulse::events::{ClientId, ClientInfo, Event, Events, Status};
use mqtt_pulse::exporter::metrics::{MetricsBuilder, MetricsHandle};
use mqtt_pulse::http::{self, Server, WebConfig};

/// How long a daemon may take to serve; how long any one exchange may take.
const DEADLINE: Duration = Duration::from_secs(10);

const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-me-7d41c0";

// ---------------------------------------------------------------------------------
// In-process servers
// ---------------------------------------------------------------------------------

/// A hub with `clients` clients that are up, and an exporter reading it.
fn exporter(clients: usize) -> (Events, MetricsHandle) {
    let events = Events::new();
    let (handle, _consumer) = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .build()
        .unwrap();
    for i in 0..clients {
        let id = ClientId::from(format!("client-{i:05}"));
        events.announce(&id, ClientInfo::new("broker.example:8883"));
        events.dispatch(&id, Event::Status(Status::Up));
    }
    (events, handle)
}

/// The exporter's routes plus `POST /echo`, which reads its body.
fn app(handle: MetricsHandle) -> Router {
    http::router(handle).merge(Router::new().route(
        "/echo",
        post(|body: String| async move { format!("{} bytes\n", body.len()) }),
    ))
}

/// A [`Server`] on 127.0.0.1:0 in its own runtime, stopped on drop.
struct Serving {
    port: u16,
    runtime: Option<tokio::runtime::Runtime>,
    _events: Events,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Serving {
    fn start(web_config: WebConfig) -> Serving {
        Serving::with(Server::new().with_web_config(web_config), exporter(2))
    }

    fn with(server: Server, (events, handle): (Events, MetricsHandle)) -> Serving {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(server.serve(listener, app(handle), async {
            let _ = stopped.await;
        }));
        Serving {
            port,
            runtime: Some(runtime),
            _events: events,
            _stop: stop,
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Writes `yaml` as `web.yml` in `dir` (so relative paths are relative to
/// `dir`) and loads it.
fn web_config(dir: &Path, yaml: &str) -> WebConfig {
    let path = dir.join("web.yml");
    fs::write(&path, yaml).unwrap();
    WebConfig::load(&path).unwrap_or_else(|e| panic!("{e}\n--- web.yml ---\n{yaml}"))
}

const TLS_ONLY: &str = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n";

fn mutual_tls(client_auth_type: &str, extra: &str) -> String {
    format!("{TLS_ONLY}  client_auth_type: {client_auth_type}\n  client_ca_file: ca.pem\n{extra}")
}
