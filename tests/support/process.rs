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

/// Spawns `command` so that the kernel SIGKILLs it when this test process
/// ends, however it ends (a panic, a timeout's SIGKILL, a fixture kept in a
/// `static` that is never dropped): a broker never outlives its test binary
/// to hold ports and CPU. `PR_SET_PDEATHSIG` fires when the *thread* that
/// spawned the child exits, not the process, so every such child is spawned
/// by one thread that lives as long as the process (a test's own thread, or
/// a `spawn_blocking` one, would end early and take the child with it). The
/// setting survives `exec`, so a shell script that `exec`s the real server
/// passes it on; children the server forks do not inherit it.
pub fn spawn_tied(command: Command) -> std::io::Result<Child> {
    use std::sync::Mutex;
    use std::sync::mpsc::{Sender, channel};
    type Request = (Command, Sender<std::io::Result<Child>>);
    static KEEPER: Mutex<Option<Sender<Request>>> = Mutex::new(None);

    let keeper = {
        let mut keeper = KEEPER.lock().unwrap_or_else(|e| e.into_inner());
        keeper
            .get_or_insert_with(|| {
                let (requests, incoming) = channel::<Request>();
                std::thread::Builder::new()
                    .name("spawn-tied".to_owned())
                    .spawn(move || {
                        // Never returns while the process lives: the sender sits
                        // in a static.
                        for (mut command, reply) in incoming {
                            let _ = reply.send(spawn_with_pdeathsig(&mut command));
                        }
                    })
                    .expect("spawn the keeper thread");
                requests
            })
            .clone()
    };
    let (reply, answer) = channel();
    keeper
        .send((command, reply))
        .expect("the keeper thread is gone");
    answer.recv().expect("the keeper thread did not answer")
}

fn spawn_with_pdeathsig(command: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs between fork and exec and calls only prctl(2),
    // which is async-signal-safe; it allocates nothing.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    command.spawn()
}

/// SIGSTOP process `pid` (a server the fixture spawned) and wait until the
/// kernel shows it stopped: it then reads and answers nothing, while the
/// kernel still completes TCP handshakes into its listen backlog.
pub fn freeze(pid: u32, what: &str) {
    use nix::sys::signal::{Signal, kill};
    kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGSTOP).expect("SIGSTOP");
    assert!(
        super::wait_until(Duration::from_secs(5), || {
            super::broker::process_state(pid) == Some('T')
        }),
        "{what} (pid {pid}) did not stop after SIGSTOP"
    );
}

/// SIGCONT after [`freeze`]; returns once the process runs again.
pub fn thaw(pid: u32, what: &str) {
    use nix::sys::signal::{Signal, kill};
    kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGCONT).expect("SIGCONT");
    assert!(
        super::wait_until(Duration::from_secs(5), || {
            super::broker::process_state(pid) != Some('T')
        }),
        "{what} (pid {pid}) still stopped after SIGCONT"
    );
}
