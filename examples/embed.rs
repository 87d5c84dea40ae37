//! An existing axum service that talks MQTT, adding mqtt-pulse in a few lines.
//!
//! The service keeps its own rumqttc event loop, its own Prometheus registry and
//! metric, and its own routes. mqtt-pulse adds: a tracker fed with each polled
//! event, the exporter on the service's registry, and its routes merged in.
//!
//! ```text
//! cargo run --example embed -- 127.0.0.1:1883 127.0.0.1:8080
//! curl -s localhost:8080/metrics | grep -E '^(mqtt_client_up|app_)'
//! ```

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use mqtt_pulse::connection::ConnectionTracker;
use mqtt_pulse::events::Events;
use mqtt_pulse::exporter::metrics::MetricsBuilder;
use prometheus::{IntCounter, Registry};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let broker = args.next().unwrap_or_else(|| "127.0.0.1:1883".into());
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let (host, port) = broker.rsplit_once(':').ok_or("broker must be host:port")?;

    // The service's own things.
    let registry = Registry::new();
    let received = IntCounter::new("app_messages_received_total", "Messages the app handled.")?;
    registry.register(Box::new(received.clone()))?;
    let app_routes = Router::new().route("/hello", get(|| async { "hello\n" }));
    let mut options = MqttOptions::new("embed-example", host, port.parse()?);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client.subscribe("embed-example/#", QoS::AtMostOnce).await?;

    // mqtt-pulse: the hub, a tracker for the service's connection, and the
    // exporter on the service's registry.
    let events = Events::new();
    let mut tracker = ConnectionTracker::new(&events, "embed-example", broker.as_str());
    let handle = MetricsBuilder::new(&events)
        .with_registry(registry)
        .install()?;
    let app = app_routes.merge(mqtt_pulse::http::router(handle));

    // The service's event loop, with one added line per outcome.
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(event) => {
                    tracker.observe(&event);
                    if let Event::Incoming(Packet::Publish(_)) = event {
                        received.inc();
                    }
                }
                Err(error) => {
                    tracker.observe_error(&error);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("serving http://{}/metrics", listener.local_addr()?);
    mqtt_pulse::http::run(listener, app, mqtt_pulse::http::shutdown_signal()).await?;
    Ok(())
}
