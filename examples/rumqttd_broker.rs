//! rumqttd, the Rust MQTT broker, as a process of its own: the broker the
//! test suite's broker matrix (tests/brokers) starts through
//! `tests/support/rumqttd.rs`, so that a test can kill it, SIGSTOP it and
//! restart it by its pid as it does Mosquitto and RabbitMQ — an in-process
//! broker could be neither frozen nor killed without the test.
//!
//! ```text
//! cargo run --example rumqttd_broker -- rumqttd.toml
//! ```
//!
//! The one argument is a TOML file in rumqttd's own config format (`[router]`,
//! `[v4.NAME]`, `[ws.NAME]`, ...; see rumqttd's `rumqttd.toml`), read as
//! `rumqttd::Config`. rumqttd is a dev-dependency: `cargo install rumqttd
//! --locked` does not build on this toolchain, and a dependency resolved with
//! ours does. Log lines go to standard error (`RUST_LOG`, default `info`).

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: rumqttd_broker CONFIG.toml");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("rumqttd_broker: {}: {e}", path.to_string_lossy());
            return ExitCode::FAILURE;
        }
    };
    let config: rumqttd::Config = match toml::from_str(&text) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("rumqttd_broker: {}: {e}", path.to_string_lossy());
            return ExitCode::FAILURE;
        }
    };
    // Runs the listeners until the process is killed.
    match rumqttd::Broker::new(config).start() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rumqttd_broker: {e}");
            ExitCode::FAILURE
        }
    }
}
