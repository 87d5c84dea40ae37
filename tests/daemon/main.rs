//! The `mqtt-pulse` binary as users run it: bad input fails with one line and
//! a status of 1 (checked for every `tests/testdata/bad-*.toml`, through both
//! `--config.check` and the serving path), reload by `POST /-/reload` and SIGHUP
//! against real Mosquitto brokers, clean shutdown on SIGTERM, secrets kept out
//! of every output, and the two log formats.
//!
//! Every daemon runs on a free port with its config in a temp dir, and is
//! killed when its guard drops. Nothing waits a fixed time: each test polls a
//! real condition (a scrape, a broker log line, the process's exit) against a
//! deadline.
// The daemon's parts: skipped without the feature (there is no [[test]] entry).
#![cfg(feature = "daemon")]

#[path = "../support/mod.rs"]
mod support;

mod files;
mod newcomer;
mod oneshot;
mod pacing;
mod protocol;
mod reload;
mod replicas;
mod rotation;
mod secrets;
mod serving;

use std::fs;
use std::path::Path;
use std::time::Duration;

use support::Broker;

/// How long a daemon may take to serve, a target to connect, a reload to show.
const DEADLINE: Duration = Duration::from_secs(10);
/// How long SIGTERM may take to end the daemon.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// A `[[target]]` table.
fn target(name: &str, broker: &Broker, extra: &str) -> String {
    format!(
        "[[target]]\nname = \"{name}\"\nurl = \"{}\"\n{extra}\n",
        broker.url()
    )
}

/// Short reconnect delays, so a refused connect is retried within the test.
const DEFAULTS: &str =
    "[defaults]\nkeep_alive = \"5s\"\nbackoff = { initial = \"50ms\", max = \"500ms\" }\n\n";

fn write_config(path: &Path, targets: &[String]) {
    fs::write(path, format!("{DEFAULTS}{}", targets.concat())).unwrap();
}
