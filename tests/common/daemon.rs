//! The real `mqtt-pulse` binary run by the integration tests.
//!
//! This module owns:
//! - [`binary`]: the path of the `mqtt-pulse` binary cargo built for the tests.
//! - [`FLAG_ENV`]: the environment variables the daemon reads flags from, which every
//!   run removes so that the caller's environment cannot change what is tested.
//! - [`Daemon`]: a running `mqtt-pulse --web.listen-address 127.0.0.1:<free port> <args>`
//!   with its stderr (the logs) in a file, started again on a fresh port if the chosen
//!   one was taken in between, returned once the caller's readiness check holds, ended by
//!   SIGTERM with [`Daemon::terminate`], and killed (SIGKILL, by its pid) and reaped on
//!   drop if it is still running.
//!
//! Helpers a test file does not use are allowed by the `#![allow(dead_code)]` of
//! `tests/common/mod.rs`, which covers this module too.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::free_port;

/// Environment variables the daemon reads flags from: removed from every run so
/// the caller's environment cannot change what is tested.
pub const FLAG_ENV: &[&str] = &[
    "MQTT_PULSE_CONFIG_FILE",
    "MQTT_PULSE_WEB_LISTEN_ADDRESS",
    "MQTT_PULSE_WEB_CONFIG_FILE",
    "MQTT_PULSE_LOG_LEVEL",
    "MQTT_PULSE_LOG_FORMAT",
];

/// How long [`Daemon::start`] waits for the readiness check to hold.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How many ports [`Daemon::start`] tries when the daemon cannot listen on the
/// free port it was given (someone took it in between).
const START_ATTEMPTS: usize = 6;
/// How often the daemon's readiness and exit are polled.
const POLL: Duration = Duration::from_millis(10);

/// The `mqtt-pulse` binary cargo built for the integration tests.
pub fn binary() -> PathBuf {
    assert_cmd::cargo::cargo_bin("mqtt-pulse")
}

/// A running `mqtt-pulse` on a free port. Its stdin and stdout are null, its
/// stderr (the logs) goes to `daemon-<port>.stderr` in the caller's dir. Killed
/// (SIGKILL) and reaped on drop if it is still running.
pub struct Daemon {
    child: Child,
    port: u16,
    stderr_path: PathBuf,
}

impl Daemon {
    /// Starts `mqtt-pulse --web.listen-address 127.0.0.1:<free port> <args>`
    /// without the [`FLAG_ENV`] variables, and returns once `ready(port)` holds.
    ///
    /// If the daemon exits because it "cannot listen on" its port, it is started
    /// again on another one (up to [`START_ATTEMPTS`] ports). Panics with its
    /// stderr if it exits otherwise, or is not ready within [`READY_TIMEOUT`].
    pub fn start(dir: &Path, args: &[&str], mut ready: impl FnMut(u16) -> bool) -> Daemon {
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let stderr_path = dir.join(format!("daemon-{port}.stderr"));
            let stderr = fs::File::create(&stderr_path).unwrap();
            let mut command = Command::new(binary());
            command
                .arg("--web.listen-address")
                .arg(format!("127.0.0.1:{port}"))
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr);
            for name in FLAG_ENV {
                command.env_remove(name);
            }
            let child = command.spawn().expect("spawn mqtt-pulse");
            let mut daemon = Daemon {
                child,
                port,
                stderr_path,
            };
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                if let Some(status) = daemon.child.try_wait().unwrap() {
                    let stderr = daemon.stderr();
                    // Someone took the free port in between: try another one.
                    if stderr.contains("cannot listen on") && attempt < START_ATTEMPTS {
                        break;
                    }
                    panic!("mqtt-pulse {args:?} exited ({status}) before serving:\n{stderr}");
                }
                if ready(port) {
                    return daemon;
                }
                assert!(
                    Instant::now() < deadline,
                    "mqtt-pulse {args:?} not ready within {READY_TIMEOUT:?}:\n{}",
                    daemon.stderr()
                );
                std::thread::sleep(POLL);
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pid of the daemon process, for signals.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    /// Everything it has written to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stderr_path).unwrap_or_default()).into_owned()
    }

    /// Sends `signal` to the daemon (by its pid); panics if that fails.
    pub fn signal(&self, signal: Signal) {
        signal::kill(self.pid(), signal).unwrap_or_else(|e| panic!("kill -{signal}: {e}"));
    }

    /// SIGTERM, then waits for the exit; panics with its stderr if it is still
    /// running after `within`.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        let mut status = None;
        let exited = super::wait_until(within, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        assert!(
            exited,
            "mqtt-pulse still running {within:?} after SIGTERM:\n{}",
            self.stderr()
        );
        status.expect("it exited")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = signal::kill(self.pid(), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
