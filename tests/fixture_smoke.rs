//! Proves the Mosquitto fixture in `tests/support` against real `mosquitto` processes.
//!
//! MQTT is spoken here with hand-written MQTT 3.1.1 CONNECT/DISCONNECT bytes over
//! std::net (and over `openssl s_client` for TLS): the point is to check the fixture, not
//! the crate's client, so nothing of the crate under test is used.

mod support;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Bridged, Broker, TestPki, free_port, pid_exists, tmp_dir, wait_until};

const CONNACK_ACCEPTED: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
/// CONNACK return code 5, "not authorised": what mosquitto 2.0 sends an MQTT 3.1.1 client
/// with a wrong or missing password (checked against 2.0.11; it does not use 4).
const CONNACK_NOT_AUTHORISED: [u8; 4] = [0x20, 0x02, 0x00, 0x05];
const DISCONNECT: [u8; 2] = [0xE0, 0x00];
const TIMEOUT: Duration = Duration::from_secs(5);

/// An MQTT 3.1.1 CONNECT (spec 3.1), hand-written: clean session, keep-alive 60 s.
fn connect_packet(client_id: &str, credentials: Option<(&str, &str)>) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut flags = 0x02; // clean session
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04];
    if credentials.is_some() {
        flags |= 0x80 | 0x40; // username, password
    }
    body.push(flags);
    body.extend_from_slice(&60u16.to_be_bytes());
    string(&mut body, client_id);
    if let Some((user, pass)) = credentials {
        string(&mut body, user);
        string(&mut body, pass);
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// Connects, sends CONNECT, returns the 4-byte reply (and the still open stream).
fn mqtt_connect(addr: &str, client_id: &str, credentials: Option<(&str, &str)>) -> [u8; 4] {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
        .write_all(&connect_packet(client_id, credentials))
        .unwrap();
    let mut reply = [0u8; 4];
    stream
        .read_exact(&mut reply)
        .unwrap_or_else(|e| panic!("no CONNACK from {addr} for {client_id}: {e}"));
    if reply == CONNACK_ACCEPTED {
        stream.write_all(&DISCONNECT).unwrap();
    }
    reply
}

#[test]
fn connect_kill_restart_on_the_same_port() {
    let broker = Broker::start();
    let port = broker.port();
    assert_ne!(port, 1883, "never the system broker's port");
    assert_eq!(broker.addr(), format!("127.0.0.1:{port}"));
    assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{port}"));
    assert!(broker.is_running());
    let first_pid = broker.pid();
    assert!(pid_exists(first_pid));

    assert_eq!(
        mqtt_connect(&broker.addr(), "smoke-first", None),
        CONNACK_ACCEPTED
    );
    // The log is readable and shows what the broker saw.
    broker.wait_for_log("Received DISCONNECT from smoke-first", TIMEOUT);
    assert!(
        broker.log().contains("New client connected from 127.0.0.1"),
        "{}",
        broker.log()
    );

    broker.kill();
    assert!(!broker.is_running());
    assert!(!pid_exists(first_pid), "killed broker was not reaped");
    let err = TcpStream::connect(broker.addr()).expect_err("killed broker still accepts");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    broker.kill(); // a second kill is a no-op

    let mark = broker.log_mark();
    broker.restart();
    assert_eq!(broker.port(), port);
    assert_ne!(broker.pid(), first_pid);
    assert!(broker.is_running());
    assert_eq!(
        mqtt_connect(&broker.addr(), "smoke-again", None),
        CONNACK_ACCEPTED
    );
    broker.wait_for_log("Received DISCONNECT from smoke-again", TIMEOUT);
    let since = broker.log_since(mark);
    assert!(
        !since.contains("smoke-first"),
        "log_since(mark) must exclude the first run: {since}"
    );
    assert!(since.contains("smoke-again"), "{since}");

    // restart() also works on a running broker.
    let pid = broker.pid();
    broker.restart();
    assert!(!pid_exists(pid));
    assert_eq!(
        mqtt_connect(&broker.addr(), "smoke-third", None),
        CONNACK_ACCEPTED
    );
}

/// Guards `Broker::restart`'s retry on a taken port (its `StartError::AddrInUse`
/// arm): restart keeps trying the same port until it is free.
#[test]
fn restart_waits_for_its_port_to_be_released() {
    let broker = Broker::start();
    broker.kill();
    // Someone else holds the port until restart() has met it, which the broker's
    // log says ("Address already in use"), then lets go.
    let squatter = std::net::TcpListener::bind(broker.addr()).expect("port free after kill");
    let mark = broker.log_mark();
    std::thread::scope(|scope| {
        let holder = scope.spawn(|| {
            let met = wait_until(TIMEOUT, || {
                broker.log_since(mark).contains("Address already in use")
            });
            drop(squatter);
            met
        });
        broker.restart();
        assert!(
            holder.join().unwrap(),
            "restart should have met the taken port: {}",
            broker.log_since(mark)
        );
    });
    assert_eq!(
        mqtt_connect(&broker.addr(), "smoke-after-squatter", None),
        CONNACK_ACCEPTED
    );
}

#[test]
fn paused_broker_accepts_tcp_but_does_not_answer_until_resumed() {
    let broker = Broker::start();
    broker.pause();

    // The kernel completes the handshake into the backlog; the stopped broker reads nothing.
    let mut stream = TcpStream::connect(broker.addr()).expect("backlog accepts while paused");
    stream
        .write_all(&connect_packet("smoke-paused", None))
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut reply = [0u8; 4];
    let err = stream
        .read_exact(&mut reply)
        .expect_err("a paused broker answered CONNECT");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "expected a read timeout, got {err}"
    );

    broker.resume();
    // The CONNECT that waited in the socket is answered now...
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.read_exact(&mut reply).expect("CONNACK after resume");
    assert_eq!(reply, CONNACK_ACCEPTED);
    // ...and new clients are served.
    assert_eq!(
        mqtt_connect(&broker.addr(), "smoke-resumed", None),
        CONNACK_ACCEPTED
    );

    // Dropping a paused broker must work too.
    broker.pause();
}

#[test]
fn password_broker_refuses_wrong_and_missing_credentials() {
    let broker = Broker::builder().password("probe", "s3cret").start();
    assert_eq!(
        mqtt_connect(&broker.addr(), "smoke-bad", Some(("probe", "wrong"))),
        CONNACK_NOT_AUTHORISED
    );
    assert_eq!(
        mqtt_connect(&broker.addr(), "smoke-anon", None),
        CONNACK_NOT_AUTHORISED
    );
    assert_eq!(
        mqtt_connect(&broker.addr(), "smoke-good", Some(("probe", "s3cret"))),
        CONNACK_ACCEPTED
    );
    broker.wait_for_log("Received DISCONNECT from smoke-good", TIMEOUT);
    let log = broker.log();
    assert_eq!(
        log.matches("not authorised").count(),
        2,
        "two refused clients: {log}"
    );
    assert_eq!(log.matches("New client connected").count(), 1, "{log}");
}

#[test]
fn extra_config_lines_take_effect() {
    // Also shows start() leaves no readiness probe behind: the one slot is free.
    let broker = Broker::builder().extra_config("max_connections 1").start();
    let config = std::fs::read_to_string(broker.config_path()).unwrap();
    assert!(config.contains("max_connections 1"), "{config}");

    let mut first = TcpStream::connect(broker.addr()).unwrap();
    first.set_read_timeout(Some(TIMEOUT)).unwrap();
    first
        .write_all(&connect_packet("smoke-only", None))
        .unwrap();
    let mut reply = [0u8; 4];
    first
        .read_exact(&mut reply)
        .unwrap_or_else(|e| panic!("first client refused: {e}\n{}", broker.log()));
    assert_eq!(reply, CONNACK_ACCEPTED);

    // A second connection is closed by the broker without a CONNACK.
    let mut second = TcpStream::connect(broker.addr()).unwrap();
    second.set_read_timeout(Some(TIMEOUT)).unwrap();
    let _ = second.write_all(&connect_packet("smoke-extra", None));
    let mut buf = [0u8; 4];
    match second.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!(
            "expected the broker to close the 2nd connection, got {other:?} {buf:02x?}\n{}",
            broker.log()
        ),
    }
    broker.wait_for_log("denied: max_connections exceeded", TIMEOUT);
}

#[test]
fn drop_kills_the_broker_and_removes_its_dir() {
    let broker = Broker::start();
    let pid = broker.pid();
    let dir = broker.dir().to_path_buf();
    let addr = broker.addr();
    assert!(dir.join("mosquitto.log").exists());
    drop(broker);
    assert!(!pid_exists(pid), "broker pid {pid} survived drop");
    assert!(!dir.exists(), "{} survived drop", dir.display());
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn helpers_hand_out_distinct_ports_and_dirs() {
    let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len(), "{ports:?}");
    assert!(!ports.contains(&1883));
    let (a, b) = (tmp_dir("smoke"), tmp_dir("smoke"));
    assert_ne!(a, b);
    assert!(a.is_dir() && b.is_dir());
    std::fs::remove_dir_all(a).unwrap();
    std::fs::remove_dir_all(b).unwrap();
}

// ---------------------------------------------------------------------------------
// TLS, checked with `openssl s_client` (rustls is not a direct dev-dependency).
// ---------------------------------------------------------------------------------

struct SClient {
    success: bool,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs `openssl s_client` against the broker: verifies its certificate against `ca`
/// (hostname "localhost"), optionally presents a client certificate, sends CONNECT and
/// DISCONNECT, and returns what came back. The broker closes the connection after the
/// DISCONNECT, which ends s_client.
fn s_client(broker: &Broker, ca: &Path, client: Option<(&Path, &Path)>, id: &str) -> SClient {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &broker.addr()])
        .args(["-servername", "localhost", "-verify_hostname", "localhost"])
        .args(["-verify_return_error", "-quiet", "-CAfile"])
        .arg(ca);
    if let Some((cert, key)) = client {
        cmd.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client (Debian package `openssl`) must be installed");
    let mut input = connect_packet(id, None);
    input.extend_from_slice(&DISCONNECT);
    // s_client with -quiet ignores EOF on stdin, so closing it is harmless.
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stdout_pipe = child.stdout.take().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = String::new();
        let _ = stderr_pipe.read_to_string(&mut buf);
        buf
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "openssl s_client (pid {pid}) did not finish; broker log:\n{}",
                broker.log()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    SClient {
        success: status.success(),
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

fn has_connack(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == CONNACK_ACCEPTED)
}

#[test]
fn tls_broker_serves_the_test_ca_and_rejects_another() {
    let dir = support::TempDir::new("smoke-pki");
    let pki = TestPki::generate(&dir);
    let other = TestPki::generate_named(&dir, "other");
    let broker = Broker::builder().tls(pki.server_files()).start();
    assert_eq!(broker.url(), format!("mqtts://localhost:{}", broker.port()));

    let ok = s_client(&broker, &pki.ca_pem_path, None, "smoke-tls");
    assert!(
        has_connack(&ok.stdout),
        "no CONNACK over TLS: {:02x?}\n{}\nbroker log:\n{}",
        ok.stdout,
        ok.stderr,
        broker.log()
    );
    broker.wait_for_log("Received DISCONNECT from smoke-tls", TIMEOUT);

    let mismatch = s_client(&broker, &other.ca_pem_path, None, "smoke-wrong-ca");
    assert!(!mismatch.success, "s_client trusted a broker of another CA");
    assert!(!has_connack(&mismatch.stdout));
    assert!(
        mismatch.stderr.contains("verify error")
            || mismatch.stderr.contains("certificate verify failed"),
        "{}",
        mismatch.stderr
    );
}

#[test]
fn tls_broker_requiring_client_certificates() {
    let dir = support::TempDir::new("smoke-pki-mtls");
    let pki = TestPki::generate(&dir);
    let other = TestPki::generate_named(&dir, "other");
    let broker = Broker::builder()
        .tls(pki.server_files())
        .extra_config("require_certificate true")
        .start();

    let ok = s_client(
        &broker,
        &pki.ca_pem_path,
        Some((&pki.client_cert_path, &pki.client_key_path)),
        "smoke-mtls",
    );
    assert!(
        has_connack(&ok.stdout),
        "client certificate rejected: {}\nbroker log:\n{}",
        ok.stderr,
        broker.log()
    );

    let no_cert = s_client(&broker, &pki.ca_pem_path, None, "smoke-no-cert");
    assert!(
        !has_connack(&no_cert.stdout),
        "served a client without a certificate"
    );

    let foreign = s_client(
        &broker,
        &pki.ca_pem_path,
        Some((&other.client_cert_path, &other.client_key_path)),
        "smoke-foreign-cert",
    );
    assert!(
        !has_connack(&foreign.stdout),
        "served a client whose certificate comes from another CA"
    );
    assert_eq!(
        broker.log().matches("New client connected").count(),
        1,
        "{}",
        broker.log()
    );
}

/// A hand-written MQTT 3.1.1 client over std::net, enough to watch a message
/// cross a bridge: CONNECT (clean session), SUBSCRIBE and PUBLISH at QoS 0, and
/// reading one PUBLISH.
struct RawClient {
    stream: TcpStream,
}

impl RawClient {
    fn connect(broker: &Broker, client_id: &str) -> RawClient {
        let mut stream = TcpStream::connect(broker.addr())
            .unwrap_or_else(|e| panic!("connect {}: {e}", broker.addr()));
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.write_all(&connect_packet(client_id, None)).unwrap();
        let mut reply = [0u8; 4];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(reply, CONNACK_ACCEPTED, "{}", broker.log());
        RawClient { stream }
    }

    fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
        assert!(body.len() < 128, "one length byte is enough here");
        let mut packet = vec![kind, body.len() as u8];
        packet.extend_from_slice(body);
        packet
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    /// SUBSCRIBE at QoS 0 and wait for its SUBACK.
    fn subscribe(&mut self, filter: &str) {
        let mut body = vec![0x00, 0x01]; // packet id 1
        Self::string(&mut body, filter);
        body.push(0x00);
        self.stream.write_all(&Self::packet(0x82, &body)).unwrap();
        let mut suback = [0u8; 5];
        self.stream.read_exact(&mut suback).unwrap();
        assert_eq!(
            suback,
            [0x90, 0x03, 0x00, 0x01, 0x00],
            "SUBACK granting QoS 0"
        );
    }

    fn publish(&mut self, topic: &str, payload: &[u8]) {
        let mut body = Vec::new();
        Self::string(&mut body, topic);
        body.extend_from_slice(payload);
        self.stream.write_all(&Self::packet(0x30, &body)).unwrap();
    }

    /// The next PUBLISH (QoS 0): its topic and payload.
    fn read_publish(&mut self) -> (String, Vec<u8>) {
        let mut header = [0u8; 2];
        self.stream.read_exact(&mut header).unwrap();
        assert_eq!(header[0] & 0xF0, 0x30, "a PUBLISH, got {header:02x?}");
        assert!(header[1] < 128, "short test messages only");
        let mut body = vec![0u8; header[1] as usize];
        self.stream.read_exact(&mut body).unwrap();
        let len = u16::from_be_bytes([body[0], body[1]]) as usize;
        let topic = String::from_utf8(body[2..2 + len].to_vec()).unwrap();
        (topic, body[2 + len..].to_vec())
    }
}

/// Sends `payload` on `from` and expects `to` to deliver it to a fresh subscriber.
fn crosses(from: &Broker, to: &Broker, topic: &str, payload: &[u8]) {
    let mut subscriber = RawClient::connect(to, &format!("smoke-sub-{}", to.port()));
    subscriber.subscribe(topic);
    let mut publisher = RawClient::connect(from, &format!("smoke-pub-{}", from.port()));
    publisher.publish(topic, payload);
    assert_eq!(
        subscriber.read_publish(),
        (topic.to_owned(), payload.to_vec()),
        "from {} to {}",
        from.port(),
        to.port()
    );
}

#[test]
fn bridged_brokers_forward_both_ways_until_the_bridge_is_removed_and_again_once_restored() {
    let pair = Bridged::start();
    // Ready means the remote has already granted the bridge's subscription.
    let granted = format!("Sending SUBACK to {}", pair.bridge_client_id());
    assert!(
        pair.remote.log().contains(&granted),
        "{}",
        pair.remote.log()
    );
    let config = pair.bridging.config();
    for line in [
        "connection ",
        "address 127.0.0.1:",
        "topic mqtt-pulse/# both 1",
    ] {
        assert!(config.contains(line), "{config}");
    }
    assert!(!pair.remote.config().contains("connection "));
    // Ready means ready: a message crosses at once, either way.
    crosses(&pair.remote, &pair.bridging, "mqtt-pulse/smoke", b"in");
    crosses(&pair.bridging, &pair.remote, "mqtt-pulse/smoke", b"out");
    // Only bridged topics cross: the subscriber gets the bridged message, not
    // the one published before it outside the bridge's topics.
    let mut subscriber = RawClient::connect(&pair.bridging, "smoke-both");
    subscriber.subscribe("#");
    let mut publisher = RawClient::connect(&pair.remote, "smoke-publisher");
    publisher.publish("elsewhere/smoke", b"stays");
    publisher.publish("mqtt-pulse/smoke", b"crosses");
    assert_eq!(
        subscriber.read_publish(),
        ("mqtt-pulse/smoke".to_owned(), b"crosses".to_vec())
    );

    let bridging_pid = pair.bridging.pid();
    pair.remove_bridge();
    assert_ne!(
        pair.bridging.pid(),
        bridging_pid,
        "the bridging broker restarted"
    );
    assert!(!pair.bridging.config().contains("connection "));
    // The remote now has no bridge to forward to: a subscriber of its own gets
    // the message, and the remote sends nothing to the bridge's client id.
    let mark = pair.remote.log_mark();
    crosses(&pair.remote, &pair.remote, "mqtt-pulse/smoke", b"stranded");
    let since = pair.remote.log_since(mark);
    let forwarded = format!("Sending PUBLISH to {}", pair.bridge_client_id());
    assert!(!since.contains(&forwarded), "{since}");

    let mark = pair.remote.log_mark();
    pair.restore_bridge();
    assert!(pair.remote.log_since(mark).contains(&granted));
    crosses(
        &pair.remote,
        &pair.bridging,
        "mqtt-pulse/smoke",
        b"in again",
    );
    crosses(
        &pair.bridging,
        &pair.remote,
        "mqtt-pulse/smoke",
        b"out again",
    );
}
