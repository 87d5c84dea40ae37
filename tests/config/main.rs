//! The config file: one bad file per rule with its exact message, good files
//! with their merged values, the shipped example, secrets kept out of every
//! message, and arbitrary input never panicking.
// The daemon's parts: skipped without the feature (there is no [[test]] entry).
#![cfg(feature = "daemon")]

mod errors;
mod fuzz;
mod reload;
mod secrets;
mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The password used in every secrets check; "xyzzy" appears nowhere else.
const SECRET: &str = "hunter2-xyzzy";
const SECRET_PART: &str = "xyzzy";

fn testdata(name: &str) -> PathBuf {
    Path::new("tests/testdata").join(name)
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}
