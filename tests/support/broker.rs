//! [`Broker`]: a private `mosquitto` for one test (or one benchmark run). See the
//! module docs of `support` for what it guarantees.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::{free_port, tmp_dir, wait_until};

/// The broker binary (Debian package `mosquitto`).
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// The password-file tool from the same package.
pub const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";

/// How long `start`/`restart` wait for the broker to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many fresh ports `start` tries when the chosen one turns out to be taken.
const START_ATTEMPTS: usize = 8;
/// Log line mosquitto 2 prints once every listener is open.
const RUNNING_MARK: &str = "running";
const ADDR_IN_USE_MARK: &str = "Address already in use";

/// PEM files for a TLS listener (broker side: CA to verify clients, server cert and key)
/// or for a TLS client (CA to verify the broker, client cert and key).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Configures a [`Broker`] before starting it.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct BrokerBuilder {
    password: Option<(String, String)>,
    tls: Option<TlsFiles>,
    extra: String,
    quiet: bool,
}

impl BrokerBuilder {
    /// Require this username/password (password file made with `mosquitto_passwd -b -c`,
    /// `allow_anonymous false`).
    pub fn password(mut self, user: &str, pass: &str) -> Self {
        self.password = Some((user.to_owned(), pass.to_owned()));
        self
    }

    /// Serve TLS (cafile/certfile/keyfile on the listener) instead of plain TCP.
    /// Add `require_certificate true` with [`extra_config`](Self::extra_config) to demand
    /// client certificates.
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Arbitrary config lines, appended after the listener block (so listener options
    /// such as `max_connections 1` or `require_certificate true` apply to it). Calls add up.
    pub fn extra_config(mut self, lines: &str) -> Self {
        self.extra.push_str(lines);
        if !self.extra.ends_with('\n') {
            self.extra.push('\n');
        }
        self
    }

    /// Log only errors, warnings and information (which holds the "running"
    /// line the start waits for; Mosquitto 2.0 logs it at `information`, not
    /// `notice`), not every packet or connection: for benchmark runs with
    /// thousands of clients.
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// Starts the broker and waits (≤ 5 s) until it accepts TCP connections. Panics with
    /// the broker's log if it does not come up.
    pub fn start(self) -> Broker {
        let dir = tmp_dir("mosquitto");
        let password_file = self.password.as_ref().map(|(user, pass)| {
            let path = dir.join("passwd");
            let out = Command::new(MOSQUITTO_PASSWD)
                .arg("-b")
                .arg("-c")
                .arg(&path)
                .arg(user)
                .arg(pass)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {MOSQUITTO_PASSWD}: {e}"));
            assert!(
                out.status.success(),
                "{MOSQUITTO_PASSWD} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            path
        });

        let files = Files {
            config_path: dir.join("mosquitto.conf"),
            log_path: dir.join("mosquitto.log"),
            output_path: dir.join("output.txt"),
            dir,
        };
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let config = self.config(port, &files.log_path, password_file.as_deref());
            fs::write(&files.config_path, config).expect("write mosquitto.conf");
            match files.spawn_ready(port) {
                Ok(child) => {
                    return Broker {
                        inner: Mutex::new(Inner {
                            pid: child.id(),
                            child: Some(child),
                        }),
                        port,
                        tls: self.tls.is_some(),
                        files,
                    };
                }
                Err(StartError::AddrInUse) => {
                    failures.push_str(&format!("attempt {attempt}: port {port} in use\n"));
                }
                Err(e) => {
                    let msg = files.failure_message(port, &e);
                    let _ = fs::remove_dir_all(&files.dir);
                    panic!("{msg}");
                }
            }
        }
        let msg = format!(
            "mosquitto: no usable port after {START_ATTEMPTS} attempts:\n{failures}--- log ---\n{}",
            files.log()
        );
        let _ = fs::remove_dir_all(&files.dir);
        panic!("{msg}");
    }

    fn config(&self, port: u16, log_path: &Path, password_file: Option<&Path>) -> String {
        let mut c = String::from("# generated by tests/support/broker.rs\n");
        // Started as root, mosquitto 2 switches to user `mosquitto`, which cannot write
        // our log file; keep the current user. (Ignored when not root.)
        if running_as_root() {
            c.push_str("user root\n");
        }
        c.push_str("persistence false\n");
        c.push_str(&format!("log_dest file {}\n", log_path.display()));
        if self.quiet {
            c.push_str("log_type error\nlog_type warning\nlog_type information\n");
            c.push_str("connection_messages false\n");
        } else {
            c.push_str("log_type all\n");
            c.push_str("connection_messages true\n");
        }
        match password_file {
            Some(path) => {
                c.push_str("allow_anonymous false\n");
                c.push_str(&format!("password_file {}\n", path.display()));
            }
            None => c.push_str("allow_anonymous true\n"),
        }
        c.push_str(&format!("listener {port} 127.0.0.1\n"));
        if let Some(tls) = &self.tls {
            c.push_str(&format!("cafile {}\n", tls.ca.display()));
            c.push_str(&format!("certfile {}\n", tls.cert.display()));
            c.push_str(&format!("keyfile {}\n", tls.key.display()));
        }
        c.push_str(&self.extra);
        c
    }
}

#[derive(Debug)]
enum StartError {
    AddrInUse,
    Exited(ExitStatus),
    Timeout,
    Spawn(io::Error),
}

struct Inner {
    /// The running broker; `None` after `kill()` (and before a successful restart).
    child: Option<Child>,
    /// Pid of the most recent broker process.
    pid: u32,
}

/// The broker's files, all inside its own temp dir.
struct Files {
    dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    /// mosquitto's stdout and stderr (errors before the log file is open go there).
    output_path: PathBuf,
}

impl Files {
    fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    fn log_len(&self) -> usize {
        fs::metadata(&self.log_path)
            .map(|m| m.len() as usize)
            .unwrap_or(0)
    }

    fn log_since(&self, mark: usize) -> String {
        let bytes = fs::read(&self.log_path).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(mark..).unwrap_or_default()).into_owned()
    }

    /// Spawns mosquitto with the config and waits until it has logged that its listener
    /// is open and a TCP connect to the port succeeds.
    fn spawn_ready(&self, port: u16) -> Result<Child, StartError> {
        let mark = self.log_len();
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.output_path)
            .map_err(StartError::Spawn)?;
        let err = out.try_clone().map_err(StartError::Spawn)?;
        let mut child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(StartError::Spawn)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(if self.log_since(mark).contains(ADDR_IN_USE_MARK) {
                    StartError::AddrInUse
                } else {
                    StartError::Exited(status)
                });
            }
            // "running" is logged only after every listener is bound, and the child's own
            // LISTEN socket on the port shows the kernel accepts connections for it. No
            // probe connection: mosquitto 2.0.11 miscounts a connection that closes
            // before CONNECT (it is subtracted twice from `max_connections`), and probes
            // would clutter the log.
            if self.log_since(mark).contains(RUNNING_MARK) && owns_listener(child.id(), port) {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                kill_and_reap(child);
                return Err(StartError::Timeout);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn failure_message(&self, port: u16, e: &StartError) -> String {
        let what = match e {
            StartError::AddrInUse => "its port was in use".to_owned(),
            StartError::Exited(status) => format!("it exited ({status})"),
            StartError::Timeout => {
                format!("it did not accept TCP connections within {READY_TIMEOUT:?}")
            }
            StartError::Spawn(err) => format!(
                "it could not be spawned ({err}); is the Debian package `mosquitto` installed?"
            ),
        };
        format!(
            "mosquitto ({MOSQUITTO}) on 127.0.0.1:{port} failed to start: {what}\n\
             --- config {} ---\n{}\n--- log ---\n{}\n--- stdout/stderr ---\n{}",
            self.config_path.display(),
            fs::read_to_string(&self.config_path).unwrap_or_default(),
            self.log(),
            fs::read_to_string(&self.output_path).unwrap_or_default(),
        )
    }
}

/// A private mosquitto for one test. See the module docs. All methods take `&self`, so
/// it can be shared (e.g. in an `Arc`) with tasks that kill or pause it.
pub struct Broker {
    inner: Mutex<Inner>,
    port: u16,
    tls: bool,
    files: Files,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("pid", &self.pid())
            .field("dir", &self.files.dir)
            .finish()
    }
}

impl Broker {
    /// A plain anonymous broker on a free port.
    pub fn start() -> Broker {
        Broker::builder().start()
    }

    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// The TCP port; stays the same across `restart()`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// "mqtt://127.0.0.1:PORT", or "mqtts://localhost:PORT" for a TLS broker (the test
    /// server certificate is issued for "localhost" and 127.0.0.1).
    pub fn url(&self) -> String {
        if self.tls {
            format!("mqtts://localhost:{}", self.port)
        } else {
            format!("mqtt://127.0.0.1:{}", self.port)
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Pid of the current broker process (of the last one after `kill()`).
    pub fn pid(&self) -> u32 {
        self.lock().pid
    }

    /// Whether the broker process is alive (a paused broker counts as running).
    pub fn is_running(&self) -> bool {
        let mut inner = self.lock();
        match inner.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The broker's temp dir (config, log, password file); removed on drop.
    pub fn dir(&self) -> &Path {
        &self.files.dir
    }

    pub fn config_path(&self) -> &Path {
        &self.files.config_path
    }

    pub fn log_path(&self) -> &Path {
        &self.files.log_path
    }

    /// The whole log so far (all runs, if restarted).
    pub fn log(&self) -> String {
        self.files.log()
    }

    /// A position in the log, for [`log_since`](Self::log_since).
    pub fn log_mark(&self) -> usize {
        self.files.log_len()
    }

    /// The log written after `mark` (from [`log_mark`](Self::log_mark)).
    pub fn log_since(&self, mark: usize) -> String {
        self.files.log_since(mark)
    }

    /// Waits until the log contains `needle`; panics with the log if it does not within
    /// `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        if !wait_until(timeout, || self.log().contains(needle)) {
            panic!(
                "mosquitto on port {} did not log {needle:?} within {timeout:?}; log:\n{}",
                self.port,
                self.log()
            );
        }
    }

    /// SIGKILL the broker and reap it: when this returns the port refuses connections.
    /// A no-op if it is not running.
    pub fn kill(&self) {
        let mut inner = self.lock();
        if let Some(child) = inner.child.take() {
            kill_and_reap(child);
        }
    }

    /// SIGSTOP: the kernel still completes TCP handshakes into the listen backlog, but
    /// the broker reads and answers nothing until [`resume`](Self::resume). Returns once
    /// the process is stopped.
    pub fn pause(&self) {
        let pid = self.running_pid("pause");
        signal::kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).expect("SIGSTOP");
        assert!(
            wait_until(Duration::from_secs(5), || process_state(pid) == Some('T')),
            "mosquitto pid {pid} did not stop after SIGSTOP (state {:?})",
            process_state(pid)
        );
    }

    /// SIGCONT after [`pause`](Self::pause). Returns once the process is no longer stopped.
    pub fn resume(&self) {
        let pid = self.running_pid("resume");
        signal::kill(Pid::from_raw(pid as i32), Signal::SIGCONT).expect("SIGCONT");
        assert!(
            wait_until(Duration::from_secs(5), || process_state(pid) != Some('T')),
            "mosquitto pid {pid} still stopped after SIGCONT"
        );
    }

    /// Starts the broker again on the same port with the same config and waits until it
    /// accepts connections. Kills the running one first, if any; works after `kill()`.
    pub fn restart(&self) {
        let mut inner = self.lock();
        if let Some(child) = inner.child.take() {
            kill_and_reap(child);
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.files.spawn_ready(self.port) {
                Ok(child) => {
                    inner.pid = child.id();
                    inner.child = Some(child);
                    return;
                }
                // Something holds our port for a moment; try again until the deadline.
                Err(StartError::AddrInUse) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("restart: {}", self.files.failure_message(self.port, &e)),
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn running_pid(&self, what: &str) -> u32 {
        let inner = self.lock();
        assert!(
            inner.child.is_some(),
            "{what}: mosquitto on port {} is not running",
            self.port
        );
        inner.pid
    }
}

/// SIGKILL `child` by its pid and reap it (a stopped process dies too).
pub fn kill_and_reap(mut child: Child) {
    // SIGKILL also ends a stopped (paused) process.
    let _ = signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let _ = child.wait();
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.files.dir);
    }
}

/// Inodes of the sockets in LISTEN state on `port` (any local address), from
/// /proc/net/tcp and /proc/net/tcp6.
fn listening_inodes(port: u16) -> Vec<u64> {
    let suffix = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ... uid timeout inode
            if fields.len() > 9
                && fields[1].ends_with(&suffix)
                && fields[3] == "0A"
                && let Ok(inode) = fields[9].parse()
            {
                inodes.push(inode);
            }
        }
    }
    inodes
}

/// True when process `pid` holds a socket listening on TCP `port`.
pub fn owns_listener(pid: u32, port: u16) -> bool {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path()).ok().is_some_and(|target| {
            let target = target.to_string_lossy();
            target
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inode| inode.parse::<u64>().ok())
                .is_some_and(|inode| inodes.contains(&inode))
        })
    })
}

/// Effective uid 0, read from /proc (nix's `geteuid` needs its `user` feature).
pub fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// The one-letter state from /proc/<pid>/stat ('R', 'S', 'T' = stopped, 'Z', ...).
pub fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ..." — comm may contain spaces and parentheses, so split at the last ')'.
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}
