//! [`RabbitMq`]: a private RabbitMQ node (Debian `rabbitmq-server` 3.10) with
//! its MQTT plugin and Web MQTT plugin, for one test binary.
//!
//! The node is the test's own: its own node name, ports (from
//! [`free_port`], so below the kernel's ephemeral range, as Erlang's
//! distribution needs), Mnesia directory, logs, config and Erlang cookie (its
//! `HOME` is the node's temp dir), all in one temp dir removed on drop. The
//! machine's own RabbitMQ (AMQP on 5672) is never touched: every signal goes
//! to the pid of this node's `beam.smp`, which is the very process spawned —
//! `RUNNING_UNDER_SYSTEMD` makes Debian's `rabbitmq-server` script `exec` the
//! VM instead of waiting on it from a shell. The node is spawned with
//! [`spawn_tied`], so it dies with the test process even if this fixture is
//! never dropped.
//!
//! It boots in about 5–10 s (a restart, with Mnesia already made, in about
//! 4 s): start one per test binary and run the cases against it side by
//! side, on its several listeners. Readiness: the node's log says "Server
//! startup complete" and the VM owns a LISTEN socket on every MQTT port. No
//! probe connection is made.
//!
//! What the plugins answer (3.10.8, checked by tests/brokers): MQTT 3.1.1
//! (and 3.1) only; a wrong password gets CONNACK 4 (bad user name or
//! password); the Web MQTT endpoint's path is `/ws` (any other path is an
//! HTTP 404 before the WebSocket upgrade).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::broker::{TlsFiles, kill_and_reap, owns_listener};
use super::process::{freeze, spawn_tied, thaw};
use super::{free_port, random_u64, tmp_dir};

/// Debian's start script (the one under /usr/lib, not the /usr/sbin wrapper,
/// which would `su` to the `rabbitmq` user).
pub const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
/// The Web MQTT plugin's WebSocket path.
pub const WEB_MQTT_PATH: &str = "/ws";

/// How long a boot may take on a loaded 2-core machine (it takes ~6 s idle).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How many sets of fresh ports a first start tries when one is taken.
const START_ATTEMPTS: usize = 4;
/// Logged once every listener is open and the plugins have started.
const READY_MARK: &str = "Server startup complete";

/// Configures a [`RabbitMq`] before starting it.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct RabbitMqBuilder {
    password: Option<(String, String)>,
    tls: Option<TlsFiles>,
}

impl RabbitMqBuilder {
    /// The one user, and no anonymous MQTT logins (`mqtt.allow_anonymous =
    /// false`). Without it MQTT clients without credentials log in as the
    /// plugin's default user.
    pub fn password(mut self, user: &str, pass: &str) -> Self {
        self.password = Some((user.to_owned(), pass.to_owned()));
        self
    }

    /// Also serve MQTT over TLS and Web MQTT over TLS with these files (no
    /// client certificates asked for).
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Boots the node and waits until it serves MQTT; panics with its log if
    /// it cannot.
    pub fn start(self) -> RabbitMq {
        let dir = tmp_dir("rabbitmq");
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let ports = Ports::pick(self.tls.is_some());
            let node = Node::new(&dir, ports, &self);
            match node.spawn_ready() {
                Ok(child) => {
                    return RabbitMq {
                        inner: Mutex::new(Inner {
                            pid: child.id(),
                            child: Some(child),
                        }),
                        node,
                    };
                }
                Err(e) => {
                    failures.push_str(&format!("attempt {attempt} ({ports:?}): {e}\n"));
                    // A boot that failed on a taken port leaves Mnesia half made.
                    let _ = fs::remove_dir_all(&node.mnesia);
                }
            }
        }
        let log = fs::read_to_string(dir.join("output.log")).unwrap_or_default();
        let _ = fs::remove_dir_all(&dir);
        panic!(
            "rabbitmq ({RABBITMQ_SERVER}) did not start; is the Debian package \
             `rabbitmq-server` installed?\n{failures}--- output ---\n{log}"
        );
    }
}

/// The node's ports, all on 127.0.0.1.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// AMQP (unused by the tests, but a node always has one).
    pub amqp: u16,
    /// Erlang distribution, fixed so two nodes never race for one.
    pub dist: u16,
    pub mqtt: u16,
    pub web_mqtt: u16,
    pub mqtts: Option<u16>,
    pub web_mqtts: Option<u16>,
}

impl Ports {
    fn pick(tls: bool) -> Ports {
        Ports {
            amqp: free_port(),
            dist: free_port(),
            mqtt: free_port(),
            web_mqtt: free_port(),
            mqtts: tls.then(free_port),
            web_mqtts: tls.then(free_port),
        }
    }

    fn mqtt_ports(&self) -> Vec<u16> {
        [
            Some(self.mqtt),
            Some(self.web_mqtt),
            self.mqtts,
            self.web_mqtts,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Everything needed to (re)start the node.
struct Node {
    dir: PathBuf,
    name: String,
    ports: Ports,
    config: PathBuf,
    plugins: PathBuf,
    mnesia: PathBuf,
    logs: PathBuf,
    output: PathBuf,
}

impl Node {
    fn new(dir: &Path, ports: Ports, builder: &RabbitMqBuilder) -> Node {
        let node = Node {
            dir: dir.to_owned(),
            name: format!(
                "mqtt-pulse-{}-{:08x}@localhost",
                std::process::id(),
                random_u64() as u32
            ),
            ports,
            config: dir.join("rabbitmq.conf"),
            plugins: dir.join("enabled_plugins"),
            mnesia: dir.join("mnesia"),
            logs: dir.join("log"),
            output: dir.join("output.log"),
        };
        fs::write(&node.config, node.config_text(builder)).expect("write rabbitmq.conf");
        fs::write(&node.plugins, "[rabbitmq_mqtt,rabbitmq_web_mqtt].\n")
            .expect("write enabled_plugins");
        fs::write(
            dir.join("rabbitmq-env.conf"),
            "# empty: tests/support/rabbitmq.rs\n",
        )
        .expect("write rabbitmq-env.conf");
        node
    }

    fn config_text(&self, builder: &RabbitMqBuilder) -> String {
        let p = &self.ports;
        let mut c = String::from("# generated by tests/support/rabbitmq.rs\n");
        c.push_str(&format!("listeners.tcp.default = 127.0.0.1:{}\n", p.amqp));
        c.push_str(&format!(
            "mqtt.listeners.tcp.default = 127.0.0.1:{}\n",
            p.mqtt
        ));
        c.push_str(&format!(
            "web_mqtt.tcp.ip = 127.0.0.1\nweb_mqtt.tcp.port = {}\n",
            p.web_mqtt
        ));
        // A nearly full disk in CI must not block publishers (or the boot).
        c.push_str("disk_free_limit.absolute = 1MB\n");
        c.push_str("loopback_users = none\n");
        match &builder.password {
            Some((user, pass)) => {
                c.push_str(&format!("default_user = {user}\ndefault_pass = {pass}\n"));
                c.push_str("mqtt.allow_anonymous = false\n");
            }
            None => c.push_str("mqtt.allow_anonymous = true\n"),
        }
        if let (Some(tls), Some(mqtts), Some(web_mqtts)) = (&builder.tls, p.mqtts, p.web_mqtts) {
            c.push_str(&format!(
                "mqtt.listeners.ssl.default = 127.0.0.1:{mqtts}\n\
                 ssl_options.cacertfile = {ca}\n\
                 ssl_options.certfile = {cert}\n\
                 ssl_options.keyfile = {key}\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n\
                 web_mqtt.ssl.ip = 127.0.0.1\n\
                 web_mqtt.ssl.port = {web_mqtts}\n\
                 web_mqtt.ssl.cacertfile = {ca}\n\
                 web_mqtt.ssl.certfile = {cert}\n\
                 web_mqtt.ssl.keyfile = {key}\n",
                ca = tls.ca.display(),
                cert = tls.cert.display(),
                key = tls.key.display(),
            ));
        }
        c
    }

    fn log_path(&self) -> PathBuf {
        self.logs.join(format!("{}.log", self.name))
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    fn command(&self) -> Command {
        let mut command = Command::new(RABBITMQ_SERVER);
        command
            .current_dir(&self.dir)
            .env("HOME", &self.dir)
            // `exec` the VM: the child's pid is beam.smp's.
            .env("RUNNING_UNDER_SYSTEMD", "true")
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.ports.amqp.to_string())
            .env("RABBITMQ_DIST_PORT", self.ports.dist.to_string())
            .env("RABBITMQ_MNESIA_BASE", &self.mnesia)
            .env("RABBITMQ_LOG_BASE", &self.logs)
            .env("RABBITMQ_CONFIG_FILE", &self.config)
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", &self.plugins)
            .env(
                "RABBITMQ_PLUGINS_EXPAND_DIR",
                self.dir.join("plugins-expand"),
            )
            // Nothing of the machine's own node: not its env file (Debian's
            // sets a node name and ERL_FLAGS), not an advanced.config.
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                self.dir.join("advanced.config"),
            )
            // Erlang distribution on loopback only.
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env_remove("ERL_FLAGS")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null());
        command
    }

    /// Starts the node and waits until it is ready; on failure the node is
    /// killed and the reason returned.
    fn spawn_ready(&self) -> Result<Child, String> {
        let mark = fs::metadata(self.log_path()).map_or(0, |m| m.len() as usize);
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.output)
            .map_err(|e| format!("open {}: {e}", self.output.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut command = self.command();
        command.stdout(out).stderr(err);
        let mut child = spawn_tied(command).map_err(|e| format!("spawn: {e}"))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("it exited ({status})"));
            }
            let log = self.log();
            if log.get(mark..).is_some_and(|l| l.contains(READY_MARK))
                && self
                    .ports
                    .mqtt_ports()
                    .iter()
                    .all(|&port| owns_listener(child.id(), port))
            {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                kill_and_reap(child);
                return Err(format!("not ready within {READY_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

struct Inner {
    /// The running node; `None` after `kill()` (until a restart).
    child: Option<Child>,
    /// Pid of the latest node's beam.smp.
    pid: u32,
}

/// A private RabbitMQ node serving MQTT and Web MQTT; see the module docs.
/// All methods take `&self`: share it (an `Arc`) with tasks that kill or
/// pause it.
pub struct RabbitMq {
    inner: Mutex<Inner>,
    node: Node,
}

impl std::fmt::Debug for RabbitMq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMq")
            .field("node", &self.node.name)
            .field("ports", &self.node.ports)
            .field("pid", &self.pid())
            .field("dir", &self.node.dir)
            .finish()
    }
}

impl RabbitMq {
    /// An anonymous node without TLS.
    pub fn start() -> RabbitMq {
        RabbitMq::builder().start()
    }

    pub fn builder() -> RabbitMqBuilder {
        RabbitMqBuilder::default()
    }

    /// The node's ports; they stay the same across restarts.
    pub fn ports(&self) -> Ports {
        self.node.ports
    }

    /// The MQTT plugin: `mqtt://127.0.0.1:PORT`.
    pub fn mqtt_url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.node.ports.mqtt)
    }

    /// The Web MQTT plugin: `ws://127.0.0.1:PORT/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}{WEB_MQTT_PATH}", self.node.ports.web_mqtt)
    }

    /// MQTT over TLS (`mqtts://localhost:PORT`); panics without [`RabbitMqBuilder::tls`].
    pub fn mqtts_url(&self) -> String {
        let port = self.node.ports.mqtts.expect("started without tls");
        format!("mqtts://localhost:{port}")
    }

    /// Web MQTT over TLS (`wss://localhost:PORT/ws`); panics without [`RabbitMqBuilder::tls`].
    pub fn wss_url(&self) -> String {
        let port = self.node.ports.web_mqtts.expect("started without tls");
        format!("wss://localhost:{port}{WEB_MQTT_PATH}")
    }

    /// Pid of the node's beam.smp (of the last one after `kill()`).
    pub fn pid(&self) -> u32 {
        self.lock().pid
    }

    /// The node's temp dir (config, Mnesia, logs); removed on drop.
    pub fn dir(&self) -> &Path {
        &self.node.dir
    }

    /// The node's log file, over all its runs.
    pub fn log(&self) -> String {
        self.node.log()
    }

    /// SIGKILL the node and reap it: when this returns, its ports refuse
    /// connections. A no-op if it is not running.
    pub fn kill(&self) {
        if let Some(child) = self.lock().child.take() {
            kill_and_reap(child);
        }
    }

    /// SIGSTOP the VM: the kernel still completes TCP handshakes into the
    /// listen backlog, but nothing is read or answered until
    /// [`resume`](Self::resume). Returns once the process is stopped.
    pub fn pause(&self) {
        freeze(self.running_pid("pause"), "rabbitmq");
    }

    /// SIGCONT after [`pause`](Self::pause); returns once it runs again.
    pub fn resume(&self) {
        thaw(self.running_pid("resume"), "rabbitmq");
    }

    /// Starts the node again (same name, ports, Mnesia) and waits until it
    /// serves MQTT; kills the running one first. Blocks for seconds: call it
    /// from `spawn_blocking` in async tests.
    pub fn restart(&self) {
        let mut inner = self.lock();
        if let Some(child) = inner.child.take() {
            kill_and_reap(child);
        }
        match self.node.spawn_ready() {
            Ok(child) => {
                inner.pid = child.id();
                inner.child = Some(child);
            }
            Err(e) => panic!(
                "rabbitmq node {} did not restart: {e}\n--- log ---\n{}\n--- output ---\n{}",
                self.node.name,
                self.node.log(),
                fs::read_to_string(&self.node.output).unwrap_or_default()
            ),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn running_pid(&self, what: &str) -> u32 {
        let inner = self.lock();
        assert!(
            inner.child.is_some(),
            "{what}: the rabbitmq node is not running"
        );
        inner.pid
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.node.dir);
    }
}
