//! The real `mqtt-pulse` binary run by the integration tests.
//!
//! This module owns:
//! - [`binary`]: the path of the `mqtt-pulse` binary cargo built for the tests, and
//!   [`command`]: a `Command` for it that inherits none of the caller's settings
//!   (`MQTT_PULSE_*` flags from the environment, `OTEL_*` exporter variables).
//! - [`run`] and [`assert_fails_with_one_line`]: one-shot runs (`--config.check`, a
//!   start that must fail) and the "one line, exit status 1" rule for their errors.
//! - [`Daemon`]: a running `mqtt-pulse --web.listen-address 127.0.0.1:<free port>
//!   <args>` with its stderr (the logs) in a file, started again on a fresh port if the
//!   chosen one was taken in between, returned once the caller's readiness check holds
//!   (usually [`http::ready`]), ended by SIGTERM with [`Daemon::terminate`], and killed
//!   (SIGKILL, by its pid) and reaped on drop if it is still running. Its HTTP side:
//!   [`Daemon::request`], [`Daemon::metrics`], [`Daemon::wait_for_metrics`].
//! - [`Interactive`]: a subcommand that prints as it goes (`watch`), its
//!   standard output read line by line as it comes, interrupted with SIGINT.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::http::{self, Response};
use super::metrics::Metrics;
use super::{free_port, text, wait_until};

/// Prefixes of the environment variables the daemon reads settings from
/// (`MQTT_PULSE_CONFIG_FILE`, `MQTT_PULSE_LOG_LEVEL`, …, `OTEL_EXPORTER_OTLP_*`):
/// removed from every run so the caller's environment cannot change what is tested.
pub const SETTINGS_ENV_PREFIXES: &[&str] = &["MQTT_PULSE_", "OTEL_"];

/// How long [`Daemon::start`] waits for the readiness check to hold.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a one-shot [`run`] may take before it is killed.
pub const ONE_SHOT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Daemon::wait_for_metrics`] scrapes before it gives up.
pub const METRICS_DEADLINE: Duration = Duration::from_secs(10);
/// How many ports [`Daemon::start`] tries when the daemon cannot listen on the
/// free port it was given (someone took it in between).
const START_ATTEMPTS: usize = 6;
/// How often the daemon's readiness and exit are polled.
const POLL: Duration = Duration::from_millis(10);

/// The `mqtt-pulse` binary cargo built for the integration tests.
pub fn binary() -> PathBuf {
    assert_cmd::cargo::cargo_bin("mqtt-pulse")
}

/// The names of the caller's environment variables in [`SETTINGS_ENV_PREFIXES`].
pub fn settings_env() -> Vec<String> {
    std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .filter(|name| {
            SETTINGS_ENV_PREFIXES
                .iter()
                .any(|prefix| name.starts_with(prefix))
        })
        .collect()
}

/// `mqtt-pulse` without the caller's [`settings_env`].
pub fn command() -> Command {
    let mut command = Command::new(binary());
    for name in settings_env() {
        command.env_remove(name);
    }
    command
}

/// Runs the binary with `args` to completion (killed after [`ONE_SHOT_TIMEOUT`])
/// with `RUST_BACKTRACE=1`, so that a panic or an error printed with a backtrace
/// would show.
pub fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    let mut command = assert_cmd::Command::from_std(command());
    command
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .timeout(ONE_SHOT_TIMEOUT);
    command.output().unwrap_or_else(|e| {
        let args: Vec<_> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        panic!("cannot run mqtt-pulse {args:?}: {e}")
    })
}

/// Exit status 1, nothing on stdout, and exactly `expected` as the one line on
/// stderr: no panic, no backtrace, no second line.
pub fn assert_fails_with_one_line(output: &Output, expected: &str, what: &str) {
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    let context = format!("{what}\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}");
    assert_eq!(output.status.code(), Some(1), "exit status: {context}");
    assert!(stdout.is_empty(), "something on stdout: {context}");
    assert!(!stderr.contains("panicked"), "a panic: {context}");
    assert!(
        !stderr.contains("RUST_BACKTRACE"),
        "a backtrace hint: {context}"
    );
    assert!(
        !stderr.contains("stack backtrace"),
        "a backtrace: {context}"
    );
    assert_eq!(stderr.lines().count(), 1, "not one line: {context}");
    assert_eq!(stderr, format!("{expected}\n"), "{context}");
}

/// How [`Daemon::start_listening`] tells the daemon its address,
/// `127.0.0.1:<free port>`.
pub enum Listen {
    /// `--web.listen-address 127.0.0.1:<port>` before the caller's arguments.
    Flag,
    /// No flag: `MQTT_PULSE_WEB_LISTEN_ADDRESS=127.0.0.1:<port>`, followed by
    /// these addresses, comma-separated.
    Env(Vec<String>),
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
    /// without the caller's [`settings_env`], and returns once `ready(port)` holds.
    ///
    /// If the daemon exits because it "cannot listen on" its port, it is started
    /// again on another one (up to [`START_ATTEMPTS`] ports). Panics with its
    /// stderr if it exits otherwise, or is not ready within [`READY_TIMEOUT`].
    pub fn start(dir: &Path, args: &[&str], ready: impl FnMut(u16) -> bool) -> Daemon {
        Daemon::start_with_env(dir, args, &[], ready)
    }

    /// [`start`](Self::start) with these environment variables set.
    pub fn start_with_env(
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        ready: impl FnMut(u16) -> bool,
    ) -> Daemon {
        Daemon::start_listening(dir, &Listen::Flag, args, env, ready)
    }

    /// [`start_with_env`](Self::start_with_env), told its address as `listen` says.
    pub fn start_listening(
        dir: &Path,
        listen: &Listen,
        args: &[&str],
        env: &[(&str, &str)],
        mut ready: impl FnMut(u16) -> bool,
    ) -> Daemon {
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let stderr_path = dir.join(format!("daemon-{port}.stderr"));
            let stderr = fs::File::create(&stderr_path).unwrap();
            let mut command = command();
            let address = format!("127.0.0.1:{port}");
            match listen {
                Listen::Flag => {
                    command.arg("--web.listen-address").arg(address);
                }
                Listen::Env(also) => {
                    let addresses = std::iter::once(address)
                        .chain(also.iter().cloned())
                        .collect::<Vec<_>>()
                        .join(",");
                    command.env("MQTT_PULSE_WEB_LISTEN_ADDRESS", addresses);
                }
            }
            command
                .args(args)
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr);
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
        let exited = wait_until(within, || {
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

    /// `method path` over plain HTTP; panics with the daemon's stderr if the
    /// exchange fails.
    pub fn request(&self, method: &str, path: &str) -> Response {
        http::fetch(self.port(), method, path).unwrap_or_else(|e| {
            panic!(
                "{method} {path} on mqtt-pulse failed: {e}\n--- stderr ---\n{}",
                self.stderr()
            )
        })
    }

    /// `GET /metrics`, which must answer 200, parsed.
    pub fn metrics(&self) -> Metrics {
        let response = self.request("GET", "/metrics");
        assert_eq!(response.status, 200, "{}", response.body);
        Metrics::parse(response.body)
    }

    /// Scrapes until `condition` holds; panics with the last page and the logs
    /// after [`METRICS_DEADLINE`].
    pub fn wait_for_metrics(&self, what: &str, condition: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + METRICS_DEADLINE;
        loop {
            let metrics = self.metrics();
            if condition(&metrics) {
                return metrics;
            }
            if Instant::now() >= deadline {
                panic!(
                    "not within {METRICS_DEADLINE:?}: {what}\n--- /metrics ---\n{}\n--- stderr ---\n{}",
                    metrics.text,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// `mqtt-pulse <args>` with its standard output read line by line as it
/// comes (a thread forwards each line), its standard error in a file. Killed
/// (SIGKILL) and reaped on drop if it is still running.
pub struct Interactive {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
    stderr_path: PathBuf,
}

impl Interactive {
    /// Starts `mqtt-pulse <args>` without the caller's [`settings_env`]; its
    /// stderr goes to `<name>.stderr` in `dir`.
    pub fn spawn(dir: &Path, name: &str, args: &[&str]) -> Interactive {
        let stderr_path = dir.join(format!("{name}.stderr"));
        let mut child = command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn mqtt-pulse");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Interactive {
            child,
            lines,
            seen: Vec::new(),
            stderr_path,
        }
    }

    /// Everything it has written to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stderr_path).unwrap_or_default()).into_owned()
    }

    /// The next line that satisfies `wanted` (the lines before it are kept
    /// in [`seen`](Self::seen) too); panics with everything seen if none
    /// comes within `within` or the output ends.
    pub fn wait_for_line(
        &mut self,
        what: &str,
        within: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(error) => panic!(
                    "no line {what} within {within:?} ({error}); seen:\n{}\n--- stderr ---\n{}",
                    self.seen.join("\n"),
                    self.stderr()
                ),
            }
        }
    }

    /// Waits up to `within` for it to exit by itself; then every line it
    /// printed (those seen before included) and its exit status.
    pub fn wait(mut self, within: Duration) -> (ExitStatus, Vec<String>) {
        let mut status = None;
        let exited = wait_until(within, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        assert!(
            exited,
            "still running after {within:?}; seen:\n{}\n--- stderr ---\n{}",
            self.seen.join("\n"),
            self.stderr()
        );
        // The reader thread ends with the pipe, after the last line.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        (status.expect("it exited"), std::mem::take(&mut self.seen))
    }

    /// SIGINT (Ctrl-C), then [`wait`](Self::wait).
    pub fn interrupt(self, within: Duration) -> (ExitStatus, Vec<String>) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        signal::kill(pid, Signal::SIGINT).unwrap();
        self.wait(within)
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
            let _ = signal::kill(pid, Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
