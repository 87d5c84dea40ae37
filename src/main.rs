//! The `mqtt-pulse` daemon. All the work is in the library
//! ([`mqtt_pulse::daemon`]); this maps its outcome to an exit status and one
//! readable line.

use std::process::ExitCode;

use clap::Parser;
use mqtt_pulse::daemon::{self, Cli};

// See the `jemalloc` feature in Cargo.toml and `daemon::return_freed_memory`.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    daemon::init_logging(cli.log_level(), cli.log_format);
    match daemon::main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mqtt-pulse: {error}");
            ExitCode::FAILURE
        }
    }
}
