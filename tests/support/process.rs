//! [`Process`]: a child process (a server, a script) with its output in a log
//! file, killed (SIGKILL, by its pid) and reaped on drop; [`output_with_input`]:
//! a one-shot run of a tool fed on its stdin (`promtool`, `python3`).

use std::fs;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::http::ready;

/// A child process killed (SIGKILL, by its pid) and reaped on drop; its output
/// goes to `log`.
pub struct Process {
    pub child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with no stdin and stdout and stderr in `log`.
    pub fn spawn(command: &mut Command, log: PathBuf) -> Process {
        let file = fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        Process { child, log }
    }

    /// What the process has written so far (empty if the log is unreadable).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True once the process has ended (it is reaped then).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Polls `GET /-/ready` on `port`; panics with the log if the process
    /// exits or does not answer 200 `within`.
    pub fn await_ready(&mut self, name: &str, port: u16, within: Duration) {
        self.await_until(&format!("{name} on port {port}"), within, || ready(port));
    }

    /// Polls `is_ready` every 50 ms until it says yes; panics with the log if
    /// the process exits first or it does not say yes `within`.
    pub fn await_until(
        &mut self,
        name: &str,
        within: Duration,
        mut is_ready: impl FnMut() -> bool,
    ) {
        let deadline = Instant::now() + within;
        while !is_ready() {
            assert!(!self.exited(), "{name} exited:\n{}", self.log());
            assert!(
                Instant::now() < deadline,
                "{name} not ready within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs `command` to completion with `input` on its stdin and returns what it
/// printed; panics if it cannot start, naming `package`, the Debian package
/// that provides it.
pub fn output_with_input(command: &mut Command, input: &[u8], package: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?} ({e}); install the {package} package"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Field `name` of `/proc/<pid>/status`, e.g. `Threads`.
fn proc_status(pid: i32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
}

/// CPU time (user + system) process `pid` has used, in clock ticks
/// (100 a second on Linux).
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// How many threads process `pid` has now.
pub fn threads(pid: i32) -> u64 {
    proc_status(pid, "Threads")
}

/// Samples the thread count of process `pid` every 10 ms until
/// [`ThreadPeak::stop`]: the most threads it had meanwhile.
pub struct ThreadPeak {
    running: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<u64>,
}

impl ThreadPeak {
    /// Starts sampling.
    pub fn start(pid: i32) -> Self {
        use std::sync::atomic::Ordering;
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = std::thread::spawn({
            let running = std::sync::Arc::clone(&running);
            move || {
                let mut most = 0;
                while running.load(Ordering::Relaxed) {
                    most = most.max(threads(pid));
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                most
            }
        });
        ThreadPeak { running, sampler }
    }

    /// Stops sampling; the most threads seen.
    pub fn stop(self) -> u64 {
        self.running
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.sampler.join().unwrap()
    }
}
