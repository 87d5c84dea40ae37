//! A service with its own routes, registry, `/metrics` and MQTT connection,
//! embedding mqtt-pulse with `default-features = false`.
//!
//! ```text
//! axum-service BROKER_HOST BROKER_PORT CA_FILE [LISTEN]
//! ```
//!
//! It connects over TLS (rumqttc's default rustls setup, which picks the
//! process's crypto provider from rustls's crate features — aws-lc-rs here),
//! prints `listening on ADDR` once it serves, and runs until SIGINT/SIGTERM.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, IntCounter, IntGauge, Registry, TextEncoder};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, TlsConfiguration, Transport};

#[derive(Clone)]
struct App {
    registry: Registry,
    pages: IntCounter,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: axum-service BROKER_HOST BROKER_PORT CA_FILE [LISTEN]";
    let host = args.next().ok_or(usage)?;
    let port: u16 = args.next().ok_or(usage)?.parse()?;
    let ca = std::fs::read(args.next().ok_or(usage)?)?;
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:0".into());

    // The service's own metrics.
    let registry = Registry::new();
    let pages = IntCounter::new("app_pages_served_total", "Pages of / served.")?;
    let connected = IntGauge::new("app_mqtt_connected", "1 while the MQTT connection is up.")?;
    registry.register(Box::new(pages.clone()))?;
    registry.register(Box::new(connected.clone()))?;

    let mut options = MqttOptions::new("axum-service", host, port);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca,
        alpn: None,
        client_auth: None,
    }));

    // mqtt-pulse: a tracker for the service's own connection, and the
    // exporter on the service's registry. Nothing is mounted on its router.
    #[cfg(feature = "pulse")]
    let mut tracker = {
        let events = mqtt_pulse::Events::new();
        let tracker = mqtt_pulse::ConnectionTracker::from_mqtt_options(&events, &options);
        mqtt_pulse::MetricsBuilder::new(&events)
            .with_registry(registry.clone())
            .install()?;
        tracker
    };

    let (_client, mut eventloop) = AsyncClient::new(options, 16);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(event) => {
                    #[cfg(feature = "pulse")]
                    tracker.observe(&event);
                    if let Event::Incoming(Packet::ConnAck(_)) = event {
                        connected.set(1);
                    }
                }
                Err(error) => {
                    #[cfg(feature = "pulse")]
                    tracker.observe_error(&error);
                    eprintln!("mqtt: {error}");
                    connected.set(0);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });

    let app = Router::new()
        .route("/", get(home))
        .route("/metrics", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "axum-service: no such page\n") })
        .with_state(App { registry, pages });
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn home(State(app): State<App>) -> &'static str {
    app.pages.inc();
    "axum-service\n"
}

/// The service's own `/metrics`: its registry, which holds mqtt-pulse's
/// exporter too.
async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let mut page = Vec::new();
    match TextEncoder::new().encode(&app.registry.gather(), &mut page) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            page,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            error.to_string().into_bytes(),
        ),
    }
}
