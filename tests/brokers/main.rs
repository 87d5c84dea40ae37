//! The broker matrix (issue 16): mqtt-pulse against Mosquitto, RabbitMQ and
//! rumqttd, each a real server started on free ports and stopped by its pid,
//! over every transport each offers. What each cell must show lives in
//! [`matrix`]; [`run`] puts every cell of a broker through its life cycle
//! (up, pings, frozen, thawed, killed, restarted, refusals) side by side on
//! one broker process; [`wire`] checks, byte by byte, what each broker sends
//! where they differ; [`docs`] keeps docs/brokers.md equal to the matrix.
//!
//! The three brokers run in parallel (one test each); RabbitMQ, which takes
//! seconds to boot, is started once.

#[path = "../support/mod.rs"]
mod support;

mod docs;
mod matrix;
mod mosquitto;
mod rabbitmq;
mod rumqttd;
mod run;
mod wire;
