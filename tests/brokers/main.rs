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

// ws:// and wss:// are cells of the matrix: without the feature there is no
// matrix to run (there is no [[test]] entry).
#![cfg(feature = "websocket")]

#[path = "../support/mod.rs"]
mod support;

mod docs;
mod matrix;
mod mosquitto;
mod rabbitmq;
mod rumqttd;
mod run;
mod wire;
