//! [`Rumqttd`]: a private rumqttd (the Rust MQTT broker) for one test, as a
//! process of its own — `examples/rumqttd_broker.rs`, built by cargo with
//! the examples (`cargo test --all-targets`, as scripts/test runs it) — so it
//! can be killed, frozen and restarted by its pid like the other brokers.
//!
//! Listeners on free ports of 127.0.0.1: MQTT 3.1.1 over TCP and over
//! WebSocket (any path; it answers with the `mqtt` subprotocol), and with
//! [`RumqttdBuilder::tls`] the same two over TLS. Readiness: the process owns
//! a LISTEN socket on every port (rumqttd logs nothing reliable to wait for,
//! and a bind error only ends the listener's thread, not the process).
//!
//! What it answers (rumqttd 0.20, checked by tests/brokers): a wrong
//! password, or none where one is required, is a bare close — no CONNACK;
//! a keep-alive of 0 is refused the same way; a client silent for 1.5
//! keep-alives is dropped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::broker::{TlsFiles, kill_and_reap, owns_listener};
use super::process::{freeze, spawn_tied, thaw};
use super::{free_port, tmp_dir};

/// How long the process may take to bind every listener.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The example binary beside this test binary (`target/<profile>/examples`),
/// built with cargo first if it is not there (say, under `cargo test --test
/// NAME`, which builds no examples).
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/<test>-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("a test binary lives in target/<profile>/deps");
        let binary = profile_dir.join("examples").join("rumqttd_broker");
        if !binary.exists() {
            let mut cargo = Command::new(env!("CARGO"));
            cargo.current_dir(env!("CARGO_MANIFEST_DIR")).args([
                "build",
                "--offline",
                "--example",
                "rumqttd_broker",
            ]);
            // Not the variables cargo set for this test process (nor the
            // `rustc-env` of our build.rs, which cargo passes on to tests):
            // build scripts (ring's, ours) rerun when they change, and the
            // next `cargo test` would rebuild them back.
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                if name.starts_with("CARGO_PKG_")
                    || name.starts_with("CARGO_BIN_")
                    || name.starts_with("CARGO_MANIFEST_")
                    || [
                        "CARGO_CRATE_NAME",
                        "CARGO_PRIMARY_PACKAGE",
                        "CARGO_TARGET_TMPDIR",
                        "CARGO_RUSTC_CURRENT_DIR",
                        "OUT_DIR",
                        "MQTT_PULSE_REVISION",
                    ]
                    .contains(&name.as_ref())
                {
                    cargo.env_remove(name.as_ref());
                }
            }
            if profile_dir
                .file_name()
                .is_some_and(|name| name == "release")
            {
                cargo.arg("--release");
            }
            let status = cargo.status().expect("run cargo");
            assert!(
                status.success(),
                "cargo build --example rumqttd_broker failed"
            );
        }
        assert!(binary.exists(), "{} was not built", binary.display());
        binary
    })
}

/// Configures a [`Rumqttd`] before starting it.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct RumqttdBuilder {
    password: Option<(String, String)>,
    tls: Option<TlsFiles>,
}

impl RumqttdBuilder {
    /// Require this user name and password on every listener.
    pub fn password(mut self, user: &str, pass: &str) -> Self {
        self.password = Some((user.to_owned(), pass.to_owned()));
        self
    }

    /// Also serve MQTT over TLS and over secure WebSocket with these files
    /// (no client certificates asked for).
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Starts the broker and waits until every listener is bound; panics
    /// with its output if it is not.
    pub fn start(self) -> Rumqttd {
        let dir = tmp_dir("rumqttd");
        let ports = RumqttdPorts {
            tcp: free_port(),
            ws: free_port(),
            tls: self.tls.as_ref().map(|_| free_port()),
            wss: self.tls.as_ref().map(|_| free_port()),
        };
        let config = dir.join("rumqttd.toml");
        fs::write(&config, self.config_text(&ports)).expect("write rumqttd.toml");
        let server = Server {
            config,
            output: dir.join("output.log"),
            dir,
            ports,
        };
        let child = server.spawn_ready().unwrap_or_else(|e| {
            let message = server.failure(&e);
            let _ = fs::remove_dir_all(&server.dir);
            panic!("{message}")
        });
        Rumqttd {
            inner: Mutex::new(Inner {
                pid: child.id(),
                child: Some(child),
            }),
            server,
        }
    }

    fn config_text(&self, ports: &RumqttdPorts) -> String {
        let mut c = String::from(
            "# generated by tests/support/rumqttd.rs\n\
             id = 0\n\n\
             [router]\n\
             max_connections = 10010\n\
             max_outgoing_packet_count = 200\n\
             max_segment_size = 104857600\n\
             max_segment_count = 10\n",
        );
        let listeners = [
            ("v4", "tcp", Some(ports.tcp), false),
            ("ws", "ws", Some(ports.ws), false),
            ("v4", "tls", ports.tls, true),
            ("ws", "wss", ports.wss, true),
        ];
        for (table, name, port, tls) in listeners {
            let Some(port) = port else { continue };
            c.push_str(&format!(
                "\n[{table}.{name}]\n\
                 name = \"{name}\"\n\
                 listen = \"127.0.0.1:{port}\"\n\
                 next_connection_delay_ms = 0\n"
            ));
            if tls && let Some(files) = &self.tls {
                c.push_str(&format!(
                    "[{table}.{name}.tls]\ncertpath = \"{}\"\nkeypath = \"{}\"\n",
                    files.cert.display(),
                    files.key.display()
                ));
            }
            c.push_str(&format!(
                "[{table}.{name}.connections]\n\
                 connection_timeout_ms = 5000\n\
                 max_payload_size = 20480\n\
                 max_inflight_count = 100\n"
            ));
            if let Some((user, pass)) = &self.password {
                c.push_str(&format!(
                    "[{table}.{name}.connections.auth]\n\"{user}\" = \"{pass}\"\n"
                ));
            }
        }
        c
    }
}

/// The broker's listener ports, all on 127.0.0.1.
#[derive(Clone, Copy, Debug)]
pub struct RumqttdPorts {
    pub tcp: u16,
    pub ws: u16,
    pub tls: Option<u16>,
    pub wss: Option<u16>,
}

impl RumqttdPorts {
    fn all(&self) -> Vec<u16> {
        [Some(self.tcp), Some(self.ws), self.tls, self.wss]
            .into_iter()
            .flatten()
            .collect()
    }
}

struct Server {
    dir: PathBuf,
    config: PathBuf,
    output: PathBuf,
    ports: RumqttdPorts,
}

impl Server {
    fn spawn_ready(&self) -> Result<Child, String> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.output)
            .map_err(|e| format!("open {}: {e}", self.output.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(binary());
        command
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = spawn_tied(command).map_err(|e| format!("spawn: {e}"))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("it exited ({status})"));
            }
            if self
                .ports
                .all()
                .iter()
                .all(|&port| owns_listener(child.id(), port))
            {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                kill_and_reap(child);
                return Err(format!(
                    "not every listener was bound within {READY_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.output).unwrap_or_default()).into_owned()
    }

    fn failure(&self, error: &str) -> String {
        format!(
            "rumqttd ({}) on {:?} failed to start: {error}\n--- config ---\n{}\n--- output ---\n{}",
            binary().display(),
            self.ports,
            fs::read_to_string(&self.config).unwrap_or_default(),
            self.output()
        )
    }
}

struct Inner {
    child: Option<Child>,
    pid: u32,
}

/// A private rumqttd; see the module docs. All methods take `&self`.
pub struct Rumqttd {
    inner: Mutex<Inner>,
    server: Server,
}

impl std::fmt::Debug for Rumqttd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rumqttd")
            .field("ports", &self.server.ports)
            .field("pid", &self.pid())
            .field("dir", &self.server.dir)
            .finish()
    }
}

impl Rumqttd {
    pub fn builder() -> RumqttdBuilder {
        RumqttdBuilder::default()
    }

    pub fn ports(&self) -> RumqttdPorts {
        self.server.ports
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn mqtt_url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.server.ports.tcp)
    }

    /// `ws://127.0.0.1:PORT/mqtt` (rumqttd takes any path).
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/mqtt", self.server.ports.ws)
    }

    /// `mqtts://localhost:PORT`; panics without [`RumqttdBuilder::tls`].
    pub fn mqtts_url(&self) -> String {
        let port = self.server.ports.tls.expect("started without tls");
        format!("mqtts://localhost:{port}")
    }

    /// `wss://localhost:PORT/mqtt`; panics without [`RumqttdBuilder::tls`].
    pub fn wss_url(&self) -> String {
        let port = self.server.ports.wss.expect("started without tls");
        format!("wss://localhost:{port}/mqtt")
    }

    pub fn pid(&self) -> u32 {
        self.lock().pid
    }

    /// What the broker wrote (its `tracing` lines), over all its runs.
    pub fn log(&self) -> String {
        self.server.output()
    }

    /// SIGKILL and reap; its ports refuse connections when this returns.
    pub fn kill(&self) {
        if let Some(child) = self.lock().child.take() {
            kill_and_reap(child);
        }
    }

    /// SIGSTOP; see [`freeze`].
    pub fn pause(&self) {
        freeze(self.running_pid("pause"), "rumqttd");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        thaw(self.running_pid("resume"), "rumqttd");
    }

    /// Starts it again on the same ports (killing the running one first) and
    /// waits until every listener is bound.
    pub fn restart(&self) {
        let mut inner = self.lock();
        if let Some(child) = inner.child.take() {
            kill_and_reap(child);
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.server.spawn_ready() {
                Ok(child) => {
                    inner.pid = child.id();
                    inner.child = Some(child);
                    return;
                }
                // A port can linger a moment after the kill.
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("restart: {}", self.server.failure(&e)),
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn running_pid(&self, what: &str) -> u32 {
        let inner = self.lock();
        assert!(inner.child.is_some(), "{what}: rumqttd is not running");
        inner.pid
    }
}

impl Drop for Rumqttd {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.server.dir);
    }
}
