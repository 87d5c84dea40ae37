//! An existing axum service that talks MQTT, adding mqtt-pulse in a few lines.
//!
//! The service keeps its own rumqttc event loop, its own Prometheus registry and
//! metric, and its own routes and 404. mqtt-pulse adds: a tracker fed with each
//! polled event (built from the service's own `MqttOptions`), the exporter on
//! the service's registry, and one route, `/metrics`, at the path the service
//! chose. Nothing else is mounted; no fallback is set.
//!
//! ```text
//! cargo run --example embed -- 127.0.0.1:1883 127.0.0.1:8080
//! curl -s localhost:8080/metrics | grep -E '^(mqtt_client_up|app_)'
//! ```

use std::time::{Duration, Instant};

use mqtt_pulse::axum::Router;
use mqtt_pulse::axum::http::StatusCode;
use mqtt_pulse::axum::routing::get;
use mqtt_pulse::prometheus::{IntCounter, Registry};
use mqtt_pulse::rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use mqtt_pulse::{ConnectionTracker, Events, MetricsBuilder};

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
    let mut options = MqttOptions::new("embed-example", host, port.parse()?);
    options.set_keep_alive(Duration::from_secs(5));

    // mqtt-pulse: the hub, a tracker for the service's connection (client id
    // and broker from its options), and the exporter on the service's registry.
    let events = Events::new();
    let mut tracker = ConnectionTracker::from_mqtt_options(&events, &options);
    let metrics = MetricsBuilder::new(&events)
        .with_registry(registry)
        .install()?;
    let app = Router::new()
        .route("/hello", get(|| async { "hello\n" }))
        .route("/metrics", mqtt_pulse::http::metrics_route(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "nothing here\n") });

    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client.subscribe("embed-example/#", QoS::AtMostOnce).await?;
    // The service's event loop, with one added line per outcome, and the same
    // ping deadline as mqtt-pulse's own connections.
    tokio::spawn(async move {
        loop {
            let deadline = tracker.ping_deadline();
            tokio::select! {
                polled = eventloop.poll() => match polled {
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
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()),
                    if deadline.is_some() =>
                {
                    if tracker.check_ping(Instant::now()) {
                        eventloop.clean(); // the next poll reconnects
                    }
                }
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("serving http://{}/metrics", listener.local_addr()?);
    mqtt_pulse::http::run(listener, app, mqtt_pulse::http::shutdown_signal()).await?;
    Ok(())
}
