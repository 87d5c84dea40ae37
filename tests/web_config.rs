//! The web config (`--web.config.file`, the Prometheus exporter-toolkit
//! format) and the server's limits, with real parts: real TLS handshakes by a
//! rustls client (and the real `curl`), bcrypt hashes made here with the
//! `bcrypt` crate, the real binary for startup errors and for one daemon end
//! to end.
//!
//! In-process servers listen on port 0 and the daemon on a [`free_port`]; no
//! test waits a fixed time for anything. The only sleeps are the slow-loris
//! client's own pace (one byte a second), which is what is under test.

mod common;

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use common::daemon::{Daemon, FLAG_ENV, binary};
use common::{TEST_CLIENT_CN, TempDir, TestPki, free_port};
use mqtt_pulse::events::{ClientId, ClientInfo, Event, Events, Status};
use mqtt_pulse::exporter::metrics::{MetricsBuilder, MetricsHandle};
use mqtt_pulse::http::{self, MAX_CONCURRENT_RENDERS, MAX_REQUEST_BODY, Server, WebConfig};
use nix::sys::signal::Signal;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ProtocolVersion, SupportedProtocolVersion};

/// How long a daemon may take to serve; how long any one exchange may take.
const DEADLINE: Duration = Duration::from_secs(10);

const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-me-7d41c0";

// ---------------------------------------------------------------------------------
// HTTP by hand, over TCP or TLS
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `METHOD path HTTP/1.1` with `Connection: close` and the given headers.
fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST"
        && !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        text.push_str("Content-Length: 0\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

fn get(path: &str) -> Vec<u8> {
    request("GET", path, &[])
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

fn connect(port: u16) -> io::Result<TcpStream> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&address, DEADLINE)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.set_write_timeout(Some(DEADLINE))?;
    Ok(stream)
}

/// Writes `request`, reads until the server closes, parses the response.
fn exchange(stream: &mut (impl io::Read + io::Write), request: &[u8]) -> io::Result<Response> {
    stream.write_all(request)?;
    stream.flush()?;
    let mut raw = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buffer[..n]),
            // A TLS peer that closes without close_notify, after a response.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    parse_response(&raw).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP response: {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut decoded = Vec::new();
        let mut rest = body.as_slice();
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?, 16).ok()?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body = decoded;
    }
    Some(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn http(port: u16, request: &[u8]) -> io::Result<Response> {
    exchange(&mut connect(port)?, request)
}

/// A TLS client: trusts `ca`, presents `identity` if given, speaks `versions`,
/// offers `alpn`.
struct TlsClient {
    config: Arc<ClientConfig>,
}

impl TlsClient {
    fn new(ca: &Path) -> Self {
        Self::build(ca, None, rustls::DEFAULT_VERSIONS, &[])
    }

    fn with_identity(ca: &Path, cert: &Path, key: &Path) -> Self {
        Self::build(ca, Some((cert, key)), rustls::DEFAULT_VERSIONS, &[])
    }

    fn build(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_file_iter(cert)
                        .unwrap()
                        .map(Result::unwrap)
                        .collect(),
                    PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsClient {
            config: Arc::new(config),
        }
    }

    fn connection(&self) -> ClientConnection {
        ClientConnection::new(
            Arc::clone(&self.config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap()
    }

    /// One request over a fresh connection.
    fn exchange(&self, port: u16, request: &[u8]) -> io::Result<Tls> {
        let mut stream = rustls::StreamOwned::new(self.connection(), connect(port)?);
        let response = exchange(&mut stream, request)?;
        Ok(Tls {
            response,
            version: stream.conn.protocol_version(),
            server_cert: stream
                .conn
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|cert| cert.to_vec())
                .unwrap_or_default(),
        })
    }

    /// Only the handshake, for what it negotiated.
    fn handshake(&self, port: u16) -> io::Result<ClientConnection> {
        let mut tcp = connect(port)?;
        let mut connection = self.connection();
        while connection.is_handshaking() {
            connection.complete_io(&mut tcp)?;
        }
        Ok(connection)
    }
}

#[derive(Debug)]
struct Tls {
    response: Response,
    version: Option<ProtocolVersion>,
    server_cert: Vec<u8>,
}

fn der(pem_file: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(pem_file).unwrap().to_vec()
}

// ---------------------------------------------------------------------------------
// In-process servers
// ---------------------------------------------------------------------------------

/// A hub with `clients` clients that are up, and an exporter reading it.
fn exporter(clients: usize) -> (Events, MetricsHandle) {
    let events = Events::new();
    let (handle, _consumer) = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .build()
        .unwrap();
    for i in 0..clients {
        let id = ClientId::from(format!("client-{i:05}"));
        events.announce(&id, ClientInfo::new("broker.example:8883"));
        events.dispatch(&id, Event::Status(Status::Up));
    }
    (events, handle)
}

/// The exporter's routes plus `POST /echo`, which reads its body.
fn app(handle: MetricsHandle) -> Router {
    http::router(handle).merge(Router::new().route(
        "/echo",
        post(|body: String| async move { format!("{} bytes\n", body.len()) }),
    ))
}

/// A [`Server`] on 127.0.0.1:0 in its own runtime, stopped on drop.
struct Serving {
    port: u16,
    runtime: Option<tokio::runtime::Runtime>,
    _events: Events,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Serving {
    fn start(web_config: WebConfig) -> Serving {
        Serving::with(Server::new().with_web_config(web_config), exporter(2))
    }

    fn with(server: Server, (events, handle): (Events, MetricsHandle)) -> Serving {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(server.serve(listener, app(handle), async {
            let _ = stopped.await;
        }));
        Serving {
            port,
            runtime: Some(runtime),
            _events: events,
            _stop: stop,
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Writes `yaml` as `web.yml` in `dir` (so relative paths are relative to
/// `dir`) and loads it.
fn web_config(dir: &Path, yaml: &str) -> WebConfig {
    let path = dir.join("web.yml");
    fs::write(&path, yaml).unwrap();
    WebConfig::load(&path).unwrap_or_else(|e| panic!("{e}\n--- web.yml ---\n{yaml}"))
}

const TLS_ONLY: &str = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n";

fn mutual_tls(client_auth_type: &str, extra: &str) -> String {
    format!("{TLS_ONLY}  client_auth_type: {client_auth_type}\n  client_ca_file: ca.pem\n{extra}")
}

// ---------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------

#[test]
fn metrics_are_scraped_over_https_with_the_test_ca_and_strangers_are_refused() {
    let dir = TempDir::new("web-https");
    let pki = TestPki::generate(&dir);
    let serving = Serving::start(web_config(&dir, TLS_ONLY));

    let tls = TlsClient::new(&pki.ca_pem_path)
        .exchange(serving.port, &get("/metrics"))
        .unwrap();
    assert_eq!(tls.response.status, 200, "{:?}", tls.response);
    assert_eq!(
        tls.response.header("content-type"),
        Some(http::METRICS_CONTENT_TYPE)
    );
    assert!(
        tls.response.body.contains("mqtt_client_up{"),
        "{}",
        tls.response.body
    );
    assert_eq!(tls.server_cert, der(&pki.server_cert_path));
    assert_eq!(tls.version, Some(ProtocolVersion::TLSv1_3));

    let other = TestPki::generate_named(&dir, "other");
    let error = TlsClient::new(&other.ca_pem_path)
        .exchange(serving.port, &get("/metrics"))
        .expect_err("a client that does not trust the CA");
    assert!(
        error.to_string().contains("invalid peer certificate"),
        "{error}"
    );
}

#[test]
fn plain_http_to_the_tls_port_gets_no_http_answer() {
    let dir = TempDir::new("web-plain-to-tls");
    let pki = TestPki::generate(&dir);
    let serving = Serving::start(web_config(&dir, TLS_ONLY));

    let mut stream = connect(serving.port).unwrap();
    stream.write_all(&get("/metrics")).unwrap();
    let mut answer = Vec::new();
    // Closed, or reset: either way no HTTP comes back.
    let _ = stream.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // A TLS alert at most.
    assert!(answer.len() < 64, "{answer:?}");

    let tls = TlsClient::new(&pki.ca_pem_path).exchange(serving.port, &get("/-/healthy"));
    assert_eq!(
        tls.unwrap().response.status,
        200,
        "the port still serves TLS"
    );
}

#[test]
fn mutual_tls_admits_only_clients_with_a_certificate_from_the_client_ca() {
    let dir = TempDir::new("web-mtls");
    let pki = TestPki::generate(&dir);
    let other = TestPki::generate_named(&dir, "other");
    let serving = Serving::start(web_config(
        &dir,
        &mutual_tls("RequireAndVerifyClientCert", ""),
    ));

    let with_cert = TlsClient::with_identity(
        &pki.ca_pem_path,
        &pki.client_cert_path,
        &pki.client_key_path,
    );
    let tls = with_cert.exchange(serving.port, &get("/metrics")).unwrap();
    assert_eq!(tls.response.status, 200);

    let without = TlsClient::new(&pki.ca_pem_path).exchange(serving.port, &get("/metrics"));
    let error = without.expect_err("no client certificate");
    assert!(error.to_string().contains("CertificateRequired"), "{error}");

    let foreign = TlsClient::with_identity(
        &pki.ca_pem_path,
        &other.client_cert_path,
        &other.client_key_path,
    )
    .exchange(serving.port, &get("/metrics"));
    assert!(foreign.is_err(), "a client certificate from another CA");
}

#[test]
fn verify_client_cert_if_given_admits_anonymous_clients_but_not_foreign_certificates() {
    let dir = TempDir::new("web-verify-if-given");
    let pki = TestPki::generate(&dir);
    let other = TestPki::generate_named(&dir, "other");
    let serving = Serving::start(web_config(&dir, &mutual_tls("VerifyClientCertIfGiven", "")));

    let anonymous = TlsClient::new(&pki.ca_pem_path).exchange(serving.port, &get("/metrics"));
    assert_eq!(anonymous.unwrap().response.status, 200);
    let own = TlsClient::with_identity(
        &pki.ca_pem_path,
        &pki.client_cert_path,
        &pki.client_key_path,
    )
    .exchange(serving.port, &get("/metrics"));
    assert_eq!(own.unwrap().response.status, 200);
    let foreign = TlsClient::with_identity(
        &pki.ca_pem_path,
        &other.client_cert_path,
        &other.client_key_path,
    )
    .exchange(serving.port, &get("/metrics"));
    assert!(foreign.is_err(), "a client certificate from another CA");
}

#[test]
fn require_any_client_cert_takes_any_certificate_but_insists_on_one() {
    // The toolkit's documented, insecure meaning: a certificate must be shown
    // (and its key proven), whoever signed it.
    let dir = TempDir::new("web-require-any");
    let pki = TestPki::generate(&dir);
    let other = TestPki::generate_named(&dir, "other");
    let serving = Serving::start(web_config(
        &dir,
        &format!("{TLS_ONLY}  client_auth_type: RequireAnyClientCert\n"),
    ));
    let foreign = TlsClient::with_identity(
        &pki.ca_pem_path,
        &other.client_cert_path,
        &other.client_key_path,
    )
    .exchange(serving.port, &get("/metrics"));
    assert_eq!(foreign.unwrap().response.status, 200);
    let without = TlsClient::new(&pki.ca_pem_path).exchange(serving.port, &get("/metrics"));
    assert!(without.is_err(), "no client certificate");
}

#[test]
fn client_allowed_sans_admit_only_certificates_naming_a_listed_san() {
    let dir = TempDir::new("web-sans");
    let pki = TestPki::generate(&dir);
    let client = TlsClient::with_identity(
        &pki.ca_pem_path,
        &pki.client_cert_path,
        &pki.client_key_path,
    );

    let listed = Serving::start(web_config(
        &dir,
        &mutual_tls(
            "RequireAndVerifyClientCert",
            &format!("  client_allowed_sans: [ somebody.example, {TEST_CLIENT_CN} ]\n"),
        ),
    ));
    let tls = client.exchange(listed.port, &get("/metrics")).unwrap();
    assert_eq!(tls.response.status, 200);

    let unlisted = Serving::start(web_config(
        &dir,
        &mutual_tls(
            "RequireAndVerifyClientCert",
            "  client_allowed_sans: [ somebody.example ]\n",
        ),
    ));
    let refused = client.exchange(unlisted.port, &get("/metrics"));
    assert!(refused.is_err(), "a certificate without a listed SAN");
}

#[test]
fn min_and_max_version_bound_the_tls_versions_spoken() {
    let dir = TempDir::new("web-versions");
    let pki = TestPki::generate(&dir);
    let tls12_only = TlsClient::build(&pki.ca_pem_path, None, &[&rustls::version::TLS12], &[]);
    let any = TlsClient::new(&pki.ca_pem_path);

    let tls13 = Serving::start(web_config(
        &dir,
        &format!("{TLS_ONLY}  min_version: TLS13\n"),
    ));
    assert!(tls12_only.exchange(tls13.port, &get("/metrics")).is_err());
    let tls = any.exchange(tls13.port, &get("/metrics")).unwrap();
    assert_eq!(tls.version, Some(ProtocolVersion::TLSv1_3));

    let tls12 = Serving::start(web_config(
        &dir,
        &format!("{TLS_ONLY}  max_version: TLS12\n"),
    ));
    let tls = any.exchange(tls12.port, &get("/metrics")).unwrap();
    assert_eq!(tls.version, Some(ProtocolVersion::TLSv1_2));
    assert_eq!(tls.response.status, 200);
}

#[test]
fn http2_is_offered_by_alpn_unless_switched_off() {
    let dir = TempDir::new("web-alpn");
    let pki = TestPki::generate(&dir);
    let client = TlsClient::build(
        &pki.ca_pem_path,
        None,
        rustls::DEFAULT_VERSIONS,
        &[b"h2", b"http/1.1"],
    );

    let default = Serving::start(web_config(&dir, TLS_ONLY));
    let connection = client.handshake(default.port).unwrap();
    assert_eq!(connection.alpn_protocol(), Some(&b"h2"[..]));

    let http1 = Serving::start(web_config(
        &dir,
        &format!("{TLS_ONLY}http_server_config:\n  http2: false\n"),
    ));
    let connection = client.handshake(http1.port).unwrap();
    assert_eq!(connection.alpn_protocol(), Some(&b"http/1.1"[..]));
}

/// Replaces `target` with `content` the way certificate tools do: a new file
/// renamed over the old one.
fn replace_atomically(target: &Path, content: &[u8]) {
    let staging = target.with_extension("new");
    fs::write(&staging, content).unwrap();
    fs::rename(&staging, target).unwrap();
}

#[test]
fn a_certificate_replaced_on_disk_is_served_from_the_next_connection_without_restart() {
    let dir = TempDir::new("web-rotate");
    let pki = TestPki::generate(&dir);
    let serving = Serving::start(web_config(&dir, TLS_ONLY));
    let first = TlsClient::new(&pki.ca_pem_path)
        .exchange(serving.port, &get("/-/healthy"))
        .unwrap();
    assert_eq!(first.server_cert, der(&pki.server_cert_path));

    // Renewed by rename, key first: a connection in between would find a
    // mismatched pair and keep the old one.
    let renewed = TestPki::generate(dir.join("renewed"));
    replace_atomically(
        &dir.join("server.key"),
        &fs::read(&renewed.server_key_path).unwrap(),
    );
    replace_atomically(
        &dir.join("server.pem"),
        &fs::read(&renewed.server_cert_path).unwrap(),
    );
    let next = TlsClient::new(&renewed.ca_pem_path)
        .exchange(serving.port, &get("/-/healthy"))
        .unwrap();
    assert_eq!(next.server_cert, der(&renewed.server_cert_path));
    assert_eq!(next.response.status, 200);

    // Rewritten in place.
    let again = TestPki::generate(dir.join("again"));
    fs::write(
        dir.join("server.key"),
        fs::read(&again.server_key_path).unwrap(),
    )
    .unwrap();
    fs::write(
        dir.join("server.pem"),
        fs::read(&again.server_cert_path).unwrap(),
    )
    .unwrap();
    let next = TlsClient::new(&again.ca_pem_path)
        .exchange(serving.port, &get("/-/healthy"))
        .unwrap();
    assert_eq!(next.server_cert, der(&again.server_cert_path));

    // A broken renewal: the previous certificate stays in service.
    fs::write(dir.join("server.pem"), "half a certificate").unwrap();
    let kept = TlsClient::new(&again.ca_pem_path)
        .exchange(serving.port, &get("/-/healthy"))
        .unwrap();
    assert_eq!(kept.server_cert, der(&again.server_cert_path));
    assert_eq!(kept.response.status, 200);

    // And once it is fixed, the fix is served.
    fs::write(
        dir.join("server.pem"),
        fs::read(&again.server_cert_path).unwrap(),
    )
    .unwrap();
    let fixed = TlsClient::new(&again.ca_pem_path).exchange(serving.port, &get("/-/healthy"));
    assert_eq!(fixed.unwrap().server_cert, der(&again.server_cert_path));
}

#[test]
fn an_update_applies_to_the_next_request_and_connection_and_refuses_what_needs_a_restart() {
    let dir = TempDir::new("web-update");
    let first_pki = TestPki::generate(&dir);
    let hash = |password: &str| bcrypt::hash(password, 4).unwrap();
    let first = web_config(
        &dir,
        &format!(
            "{TLS_ONLY}http_server_config:\n  headers:\n    X-Frame-Options: deny\n{}",
            users(&hash(PASSWORD))
        ),
    );
    let serving = Serving::start(first.clone());
    let scrape = |client: &TlsClient, password: &str| {
        client
            .exchange(
                serving.port,
                &request(
                    "GET",
                    "/metrics",
                    &[("Authorization", &basic(USER, password))],
                ),
            )
            .unwrap()
    };
    let old_client = TlsClient::new(&first_pki.ca_pem_path);
    let before = scrape(&old_client, PASSWORD);
    assert_eq!(before.response.status, 200);
    assert_eq!(before.response.header("x-frame-options"), Some("deny"));

    // A new file elsewhere: new certificate (so not the followed files), a
    // new password, other headers, a rate limit.
    let second_dir = dir.join("second");
    let second_pki = TestPki::generate(&second_dir);
    let new_password = "rotated-password-51f2";
    let second = web_config(
        &second_dir,
        &format!(
            "{TLS_ONLY}http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
             rate_limit:\n  interval: 1h\n  burst: 2\n{}",
            users(&hash(new_password))
        ),
    );
    let runtime = serving.runtime.as_ref().unwrap();
    runtime.block_on(first.update(second)).unwrap();

    let new_client = TlsClient::new(&second_pki.ca_pem_path);
    let after = scrape(&new_client, new_password);
    assert_eq!(after.response.status, 200);
    assert_eq!(after.server_cert, der(&second_pki.server_cert_path));
    assert_eq!(
        after.response.header("x-content-type-options"),
        Some("nosniff")
    );
    assert_eq!(after.response.header("x-frame-options"), None);
    assert!(
        old_client
            .exchange(serving.port, &get("/-/healthy"))
            .is_err(),
        "the old certificate is no longer served"
    );
    // The old password is refused, and then the new burst of 2 is spent.
    assert_eq!(scrape(&new_client, PASSWORD).response.status, 401);
    assert_eq!(scrape(&new_client, new_password).response.status, 429);

    // Turning TLS off takes a restart: refused, and nothing changes.
    let plain_dir = dir.join("plain");
    fs::create_dir_all(&plain_dir).unwrap();
    let plain = web_config(&plain_dir, &users(&hash("plain-password")));
    let error = runtime.block_on(first.update(plain)).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: tls_server_config was removed (turning TLS off), which takes a restart; \
             nothing in the file was applied",
            plain_dir.join("web.yml").display()
        )
    );
    let still = new_client
        .exchange(serving.port, &get("/-/healthy"))
        .unwrap();
    assert_eq!(still.response.status, 200);
    assert_eq!(still.server_cert, der(&second_pki.server_cert_path));
}

#[test]
fn inline_pem_works_like_files() {
    let dir = TempDir::new("web-inline");
    let pki = TestPki::generate(&dir);
    let indent = |path: &Path| {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| format!("    {line}\n"))
            .collect::<String>()
    };
    let yaml = format!(
        "tls_server_config:\n  cert: |\n{}  key: |\n{}  client_ca: |\n{}  client_auth_type: RequireAndVerifyClientCert\n",
        indent(&pki.server_cert_path),
        indent(&pki.server_key_path),
        indent(&pki.ca_pem_path),
    );
    let config = web_config(&dir, &yaml);
    assert!(!format!("{config:?}").contains("PRIVATE KEY"), "{config:?}");
    let serving = Serving::start(config);
    let client = TlsClient::with_identity(
        &pki.ca_pem_path,
        &pki.client_cert_path,
        &pki.client_key_path,
    );
    assert_eq!(
        client
            .exchange(serving.port, &get("/metrics"))
            .unwrap()
            .response
            .status,
        200
    );
    assert!(
        TlsClient::new(&pki.ca_pem_path)
            .exchange(serving.port, &get("/metrics"))
            .is_err()
    );
}

// ---------------------------------------------------------------------------------
// Basic auth, headers, rate limit
// ---------------------------------------------------------------------------------

fn users(hash: &str) -> String {
    format!("basic_auth_users:\n  {USER}: {hash}\n")
}

#[test]
fn basic_auth_needs_the_right_password_and_answers_401_with_a_challenge_otherwise() {
    let dir = TempDir::new("web-basic-auth");
    // What `htpasswd -nBC 10` makes.
    let hash = bcrypt::hash(PASSWORD, 10).unwrap();
    let config = web_config(&dir, &users(&hash));
    assert!(!format!("{config:?}").contains(&hash), "{config:?}");
    let serving = Serving::start(config);
    let port = serving.port;
    let right = basic(USER, PASSWORD);

    for path in ["/metrics", "/"] {
        let response = http(port, &request("GET", path, &[("Authorization", &right)])).unwrap();
        assert_eq!(response.status, 200, "{path}: {response:?}");
    }
    // Remembered after the first pass, still right.
    let again = http(
        port,
        &request("GET", "/metrics", &[("Authorization", &right)]),
    )
    .unwrap();
    assert!(again.body.contains("mqtt_client_up{"));

    let refusals = [
        ("missing", None),
        ("wrong password", Some(basic(USER, "scrape-me-7d41c1"))),
        ("empty password", Some(basic(USER, ""))),
        ("unknown user", Some(basic("grafana", PASSWORD))),
        (
            "user in the wrong case",
            Some(basic("Prometheus", PASSWORD)),
        ),
        ("not basic", Some(format!("Bearer {PASSWORD}"))),
        ("not base64", Some("Basic !!!".to_owned())),
    ];
    for path in ["/metrics", "/", "/no-such-page"] {
        for (what, authorization) in &refusals {
            let headers: Vec<(&str, &str)> = authorization
                .iter()
                .map(|value| ("Authorization", value.as_str()))
                .collect();
            let response = http(port, &request("GET", path, &headers)).unwrap();
            assert_eq!(response.status, 401, "{what} on {path}: {response:?}");
            assert_eq!(
                response.header("www-authenticate"),
                Some("Basic realm=\"mqtt-pulse\""),
                "{what} on {path}"
            );
            assert!(
                !response.body.contains("mqtt_client"),
                "{what}: {}",
                response.body
            );
        }
    }
    let unknown = http(
        port,
        &request("GET", "/no-such-page", &[("Authorization", &right)]),
    );
    assert_eq!(unknown.unwrap().status, 404, "authenticated, then routed");
}

#[test]
fn health_endpoints_answer_without_credentials_and_are_never_rate_limited() {
    let dir = TempDir::new("web-probes");
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let serving = Serving::start(web_config(
        &dir,
        &format!("{}rate_limit:\n  interval: 1h\n  burst: 1\n", users(&hash)),
    ));
    for _ in 0..5 {
        for (method, path, body) in [
            ("GET", "/-/healthy", "mqtt-pulse is Healthy.\n"),
            ("GET", "/-/ready", "mqtt-pulse is Ready.\n"),
            ("HEAD", "/-/healthy", ""),
        ] {
            let response = http(serving.port, &request(method, path, &[])).unwrap();
            assert_eq!(response.status, 200, "{method} {path}");
            assert_eq!(response.body, body);
        }
    }
}

#[test]
fn the_rate_limit_answers_429_beyond_the_burst() {
    let dir = TempDir::new("web-rate-limit");
    let serving = Serving::start(web_config(
        &dir,
        "rate_limit:\n  interval: 1h\n  burst: 3\n",
    ));
    let statuses: Vec<u16> = (0..5)
        .map(|_| http(serving.port, &get("/metrics")).unwrap().status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // An interval of 0 switches it off, as documented.
    let off = Serving::start(web_config(&dir, "rate_limit:\n  interval: 0\n  burst: 1\n"));
    assert!((0..5).all(|_| http(off.port, &get("/metrics")).unwrap().status == 200));
}

#[test]
fn configured_headers_are_on_every_response_401_and_404_included() {
    let dir = TempDir::new("web-headers");
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let serving = Serving::start(web_config(
        &dir,
        &format!(
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n    \
             Strict-Transport-Security: \"\"\n{}",
            users(&hash)
        ),
    ));
    let right = basic(USER, PASSWORD);
    for (path, authorization, status) in [
        ("/metrics", Some(right.as_str()), 200),
        ("/metrics", None, 401),
        ("/-/healthy", None, 200),
        ("/nope", Some(right.as_str()), 404),
    ] {
        let headers: Vec<(&str, &str)> = authorization
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        let response = http(serving.port, &request("GET", path, &headers)).unwrap();
        assert_eq!(response.status, status, "{path}");
        assert_eq!(response.header("x-frame-options"), Some("deny"), "{path}");
        assert_eq!(
            response.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            response.header("strict-transport-security"),
            None,
            "blank means unset"
        );
    }
}

// ---------------------------------------------------------------------------------
// Whole files
// ---------------------------------------------------------------------------------

#[test]
fn the_exporter_toolkit_documentation_example_loads_and_serves() {
    let dir = TempDir::new("web-docs-example");
    let pki = TestPki::generate(dir.join("pki"));
    fs::copy(&pki.server_cert_path, dir.join("server.crt")).unwrap();
    fs::copy(&pki.server_key_path, dir.join("server.key")).unwrap();
    // docs/web-config.yml of prometheus/exporter-toolkit, as published.
    let example = r#"# TLS and basic authentication configuration example.
#
# Additionally, a certificate and a key file are needed.
tls_server_config:
  cert_file: server.crt
  key_file: server.key

# Usernames and passwords required to connect.
# Passwords are hashed with bcrypt: https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md#about-bcrypt.
basic_auth_users:
  alice: $2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze
  bob: $2y$10$hLqFl9jSjoAAy95Z/zw8Ye8wkdMBM8c5Bn1ptYqP/AXyV0.oy0S8m

# Rate limiting requests on the endpoint using a token bucket
rate_limit:
  interval: "1s" # time interval between two requests, set to 0 to disable rate limiter
  burst: 20 # and permits a burst of up to 20 requests.
"#;
    let config = web_config(&dir, example);
    assert!(config.is_tls() && config.has_basic_auth());
    let serving = Serving::start(config);
    let client = TlsClient::new(&pki.ca_pem_path);
    assert_eq!(
        client
            .exchange(serving.port, &get("/-/healthy"))
            .unwrap()
            .response
            .status,
        200
    );
    let guess = request(
        "GET",
        "/metrics",
        &[("Authorization", &basic("alice", "guess"))],
    );
    assert_eq!(
        client
            .exchange(serving.port, &guess)
            .unwrap()
            .response
            .status,
        401
    );
}

#[test]
fn the_documented_format_with_every_key_set_loads_and_serves() {
    let dir = TempDir::new("web-every-key");
    let pki = TestPki::generate(&dir);
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    // The test PKI's keys are ECDSA P-256: the TLS 1.2 suites must be ECDSA ones.
    let yaml = format!(
        r#"tls_server_config:
  cert_file: server.pem
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.pem
  client_allowed_sans: [ {TEST_CLIENT_CN} ]
  min_version: TLS12
  max_version: TLS13
  cipher_suites: [ TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 ]
  curve_preferences: [ X25519, CurveP256 ]
  prefer_server_cipher_suites: true
http_server_config:
  http2: true
  headers:
    Content-Security-Policy: "default-src 'none'"
    X-Frame-Options: sameorigin
    X-Content-Type-Options: nosniff
    X-XSS-Protection: "1; mode=block"
    Strict-Transport-Security: max-age=31536000
basic_auth_users:
  {USER}: {hash}
rate_limit:
  interval: 100ms
  burst: 10
"#
    );
    let serving = Serving::start(web_config(&dir, &yaml));
    let scrape = request(
        "GET",
        "/metrics",
        &[("Authorization", &basic(USER, PASSWORD))],
    );
    for versions in [
        &[&rustls::version::TLS12][..],
        &[&rustls::version::TLS13][..],
    ] {
        let client = TlsClient::build(
            &pki.ca_pem_path,
            Some((&pki.client_cert_path, &pki.client_key_path)),
            versions,
            &[],
        );
        let tls = client.exchange(serving.port, &scrape).unwrap();
        assert_eq!(tls.response.status, 200, "{:?}", tls.response);
        assert_eq!(tls.response.header("x-frame-options"), Some("sameorigin"));
        assert_eq!(
            tls.response.header("content-security-policy"),
            Some("default-src 'none'")
        );
        assert_eq!(
            tls.response.header("x-xss-protection"),
            Some("1; mode=block")
        );
        assert_eq!(
            tls.response.header("strict-transport-security"),
            Some("max-age=31536000")
        );
    }
}

// ---------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------

/// Reads until the server closes the connection (or `limit` passes) and says
/// how long that took and what came back.
fn wait_for_close(mut stream: &TcpStream, limit: Duration) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!("still open after {limit:?}")
            }
            // Reset: closed too.
            Err(_) => break,
        }
    }
    (started.elapsed(), answer)
}

#[test]
fn a_slow_loris_client_is_disconnected_once_the_header_read_timeout_passes() {
    let timeout = Duration::from_secs(2);
    let serving = Serving::with(Server::new().with_header_read_timeout(timeout), exporter(2));
    let stream = connect(serving.port).unwrap();
    let connected = Instant::now();
    let mut writer = stream.try_clone().unwrap();
    // The client under test: one byte of headers a second, until refused.
    std::thread::spawn(move || {
        for byte in b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slow\r\n\r\n" {
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let (_, answer) = wait_for_close(&stream, timeout * 4);
    let open_for = connected.elapsed();
    assert!(
        open_for >= timeout - Duration::from_millis(100)
            && open_for < timeout + Duration::from_millis(1_500),
        "closed after {open_for:?}, the limit is {timeout:?}"
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains(" 200 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // A client that is not slow is not affected.
    assert_eq!(http(serving.port, &get("/-/healthy")).unwrap().status, 200);
}

#[test]
fn a_client_that_never_finishes_the_tls_handshake_is_disconnected_after_the_timeout() {
    let dir = TempDir::new("web-slow-handshake");
    let _pki = TestPki::generate(&dir);
    let timeout = Duration::from_secs(2);
    let serving = Serving::with(
        Server::new()
            .with_header_read_timeout(timeout)
            .with_web_config(web_config(&dir, TLS_ONLY)),
        exporter(2),
    );
    let stream = connect(serving.port).unwrap();
    let connected = Instant::now();
    let (_, answer) = wait_for_close(&stream, timeout * 4);
    let open_for = connected.elapsed();
    assert!(
        open_for >= timeout - Duration::from_millis(100)
            && open_for < timeout + Duration::from_millis(1_500),
        "closed after {open_for:?}, the limit is {timeout:?}"
    );
    assert!(answer.is_empty(), "{answer:?}");
}

#[test]
fn request_bodies_over_the_limit_are_answered_413() {
    let serving = Serving::with(Server::new(), exporter(2));
    let port = serving.port;

    let within = vec![b'x'; MAX_REQUEST_BODY];
    let mut post = request(
        "POST",
        "/echo",
        &[("Content-Length", &within.len().to_string())],
    );
    post.extend_from_slice(&within);
    let response = http(port, &post).unwrap();
    assert_eq!(
        (response.status, response.body.as_str()),
        (200, "65536 bytes\n")
    );

    // Refused on the declared length alone: the body is never sent.
    let declared = (MAX_REQUEST_BODY + 1).to_string();
    let response = http(
        port,
        &request("POST", "/echo", &[("Content-Length", &declared)]),
    )
    .unwrap();
    assert_eq!(response.status, 413, "{response:?}");

    // Chunked: refused once more than the limit has come in.
    let mut stream = connect(port).unwrap();
    let mut chunked = request("POST", "/echo", &[("Transfer-Encoding", "chunked")]);
    let chunk = vec![b'y'; 16 * 1024];
    for _ in 0..5 {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let response = exchange(&mut stream, &chunked).unwrap();
    assert_eq!(response.status, 413, "{response:?}");
}

#[test]
fn landing_pages_beyond_the_render_cap_are_answered_503_at_once() {
    // Ten thousand clients: a render long enough for a burst to overlap it.
    // (`/metrics` shares its renders among waiting scrapes instead: tests/http.rs.)
    let serving = Serving::with(Server::new(), exporter(10_000));
    let port = serving.port;
    let burst = MAX_CONCURRENT_RENDERS * 3;
    let start = Arc::new(Barrier::new(burst));
    let scrapers: Vec<_> = (0..burst)
        .map(|_| {
            let start = Arc::clone(&start);
            let mut stream = connect(port).unwrap();
            std::thread::spawn(move || {
                start.wait();
                let sent = Instant::now();
                let response = exchange(&mut stream, &get("/")).unwrap();
                (response, sent.elapsed())
            })
        })
        .collect();
    let results: Vec<(Response, Duration)> =
        scrapers.into_iter().map(|s| s.join().unwrap()).collect();

    let served: Vec<&Duration> = results
        .iter()
        .filter(|(r, _)| r.status == 200)
        .map(|(_, d)| d)
        .collect();
    let refused: Vec<&(Response, Duration)> =
        results.iter().filter(|(r, _)| r.status == 503).collect();
    assert_eq!(served.len() + refused.len(), burst, "only 200 and 503");
    assert!(
        served.len() >= MAX_CONCURRENT_RENDERS,
        "{} served",
        served.len()
    );
    assert!(!refused.is_empty(), "all {burst} were served at once");
    let slowest_render = **served.iter().max().unwrap();
    for (response, took) in &refused {
        assert_eq!(response.header("retry-after"), Some("1"));
        assert!(
            *took < slowest_render,
            "a refusal took {took:?}, longer than a render ({slowest_render:?})"
        );
    }
    // The cap frees up.
    assert_eq!(http(port, &get("/")).unwrap().status, 200);
}

// ---------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------

/// Runs the daemon with `web_config` until it exits (it must, within 10 s).
fn start_and_fail(web_config: &Path) -> std::process::Output {
    let mut command = assert_cmd::Command::new(binary());
    command
        .args(["--config.file", "tests/testdata/good-minimal.toml"])
        .args([
            "--web.listen-address",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .arg("--web.config.file")
        .arg(web_config)
        .env("RUST_BACKTRACE", "1")
        .timeout(DEADLINE);
    for name in FLAG_ENV {
        command.env_remove(name);
    }
    command.output().unwrap()
}

fn assert_one_line_exit_1(output: &std::process::Output, expected: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("{what}\n--- stderr ---\n{stderr}");
    assert_eq!(output.status.code(), Some(1), "{context}");
    assert!(output.stdout.is_empty(), "{context}");
    assert_eq!(stderr, format!("mqtt-pulse: {expected}\n"), "{context}");
}

#[test]
fn every_bad_web_config_fails_at_start_with_one_line_naming_file_line_and_key() {
    let web = "tests/testdata/web";
    let supported_suites = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, \
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, \
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, \
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, TLS_AES_128_GCM_SHA256, \
        TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256";
    let not_bcrypt = "is not a bcrypt hash (the hash format is malformed; expected 60 ASCII bytes); \
        make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`";
    // The operating system's words for a missing file.
    let not_found = fs::read(format!("{web}/no-such-server.pem")).unwrap_err();
    let table: Vec<(&str, String)> = vec![
        ("bad-unknown-top-level-key", "2:1: unknown field `tls_config`, expected one of tls_server_config, http_server_config, basic_auth_users, rate_limit".into()),
        ("bad-unknown-tls-key", "3:3: unknown field `key_fille`, expected one of cert, key, client_ca, cert_file, key_file, client_auth_type, client_ca_file, client_allowed_sans, min_version, max_version, cipher_suites, curve_preferences, prefer_server_cipher_suites".into()),
        ("bad-cert-without-key", "2:14: tls_server_config.cert_file is set but key_file (or key) is missing".into()),
        ("bad-key-without-cert", "2:13: tls_server_config has no certificate: set cert_file (or cert) and key_file (or key)".into()),
        ("bad-cert-and-inline-cert", "4:5: tls_server_config: set cert_file or cert, not both".into()),
        ("bad-missing-cert-file", format!("2:14: tls_server_config.cert_file {web}/no-such-server.pem: cannot read the file: {not_found}")),
        ("bad-cert-not-pem", format!("2:14: tls_server_config.cert_file {web}/not-a-certificate.pem: holds no PEM certificate (BEGIN CERTIFICATE)")),
        ("bad-client-auth-type", "4:21: tls_server_config.client_auth_type \"RequireAndVerifyClientCerts\" is unknown; expected one of NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert".into()),
        ("bad-client-ca-without-client-auth", "4:19: tls_server_config.client_ca_file is set but client_auth_type is NoClientCert, so it would not be used: set client_auth_type: RequireAndVerifyClientCert".into()),
        ("bad-verify-without-client-ca", "4:21: tls_server_config.client_auth_type RequireAndVerifyClientCert needs client_ca_file (or client_ca) to verify client certificates with".into()),
        ("bad-allowed-sans-without-required-cert", "6:24: tls_server_config.client_allowed_sans needs client_auth_type RequireAndVerifyClientCert (or RequireAnyClientCert), not VerifyClientCertIfGiven: otherwise a client without a certificate gets in".into()),
        ("bad-min-version-tls10", "4:16: tls_server_config.min_version TLS10 is not supported: mqtt-pulse's TLS library (rustls) speaks only TLS12 and TLS13; use TLS12".into()),
        ("bad-max-version-tls11", "4:16: tls_server_config.max_version TLS11 is not supported: mqtt-pulse's TLS library (rustls) speaks only TLS12 and TLS13; use TLS12".into()),
        ("bad-unknown-tls-version", "4:16: tls_server_config.min_version \"1.2\" is unknown; expected TLS12 or TLS13".into()),
        ("bad-min-version-above-max", "4:16: tls_server_config.min_version TLS13 is above max_version TLS12".into()),
        ("bad-cipher-suite", format!("5:5: tls_server_config.cipher_suites: \"TLS_RSA_WITH_AES_128_CBC_SHA\" is not supported by mqtt-pulse's TLS library (rustls); supported: {supported_suites}")),
        ("bad-curve", "4:22: tls_server_config.curve_preferences: \"CurveP521\" is not supported by mqtt-pulse's TLS library (rustls); supported: X25519, CurveP256, CurveP384".into()),
        ("bad-tls-settings-without-certificate", "2:16: tls_server_config.min_version is set but there is no certificate: set cert_file and key_file to serve TLS, or remove min_version".into()),
        ("bad-header-name", "3:19: http_server_config.headers: \"X-Powered-By\" cannot be set; allowed: Content-Security-Policy, X-Frame-Options, X-Content-Type-Options, X-XSS-Protection, Strict-Transport-Security".into()),
        ("bad-header-value", "3:22: http_server_config.headers.X-Frame-Options: \"allow-from https://example.org\" is not allowed; expected one of deny, sameorigin".into()),
        ("bad-http2-not-a-boolean", "2:10: invalid boolean".into()),
        ("bad-bcrypt-hash", format!("2:15: basic_auth_users: the password hash of user \"prometheus\" {not_bcrypt}")),
        ("bad-plaintext-password", format!("3:15: basic_auth_users: the password hash of user \"prometheus\" {not_bcrypt}")),
        ("bad-duplicate-user", "3:3: duplicate mapping key `prometheus` is not allowed here".into()),
        ("bad-yaml-syntax", "2:15: unclosed quote".into()),
        ("bad-rate-limit-interval", "2:13: rate_limit.interval \"1 day\" is not a duration such as 1s, 500ms or 1m30s".into()),
        ("bad-rate-limit-burst-zero", "3:10: rate_limit.burst must be at least 1 when an interval is set, or every request would be refused".into()),
        ("bad-rate-limit-burst-without-interval", "2:10: rate_limit.burst is set but rate_limit.interval is not, so there would be no rate limit: set interval (e.g. 1s) or remove burst".into()),
    ];
    // Secrets in those files that no output may show.
    let secrets = [
        "hunter2",
        "correct-horse-battery-staple",
        "an-unclosed-quote-around-a-secret",
        "iZi1QldSxf8Gpu2mc7WKDe",
    ];

    let mut files: Vec<String> = fs::read_dir(web)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("bad-") && name.ends_with(".yml"))
        .collect();
    files.sort();
    let mut named: Vec<String> = table
        .iter()
        .map(|(name, _)| format!("{name}.yml"))
        .collect();
    named.sort();
    assert_eq!(
        files, named,
        "every bad-*.yml has its expected line, and only those"
    );

    for (name, message) in &table {
        let path = format!("{web}/{name}.yml");
        let expected = format!("{path}:{message}");
        let error = WebConfig::load(&path).expect_err(&path);
        assert_eq!(
            error.to_string(),
            expected,
            "the library's error for {path}"
        );

        let output = start_and_fail(Path::new(&path));
        assert_one_line_exit_1(&output, &expected, &path);
        let everything = format!(
            "{expected}{error:?}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        for secret in secrets {
            assert!(
                !everything.contains(secret),
                "{path} shows {secret:?}: {everything}"
            );
        }
    }
}

#[test]
fn a_key_that_does_not_belong_to_the_certificate_fails_at_start_with_one_line() {
    let dir = TempDir::new("web-key-mismatch");
    let pki = TestPki::generate(&dir);
    let other = TestPki::generate_named(&dir, "other");
    let path = dir.join("web.yml");
    fs::write(
        &path,
        "tls_server_config:\n  cert_file: server.pem\n  key_file: other-server.key\n",
    )
    .unwrap();
    let expected = format!(
        "{}:3:13: tls_server_config.key_file {}: the private key does not belong to the \
         certificate in tls_server_config.cert_file {}",
        path.display(),
        other.server_key_path.display(),
        pki.server_cert_path.display()
    );
    assert_eq!(WebConfig::load(&path).unwrap_err().to_string(), expected);
    assert_one_line_exit_1(&start_and_fail(&path), &expected, "mismatched key");
}

#[test]
fn the_daemon_serves_https_with_basic_auth_keeps_probes_open_and_never_shows_a_secret() {
    let dir = TempDir::new("web-daemon");
    let pki = TestPki::generate(&dir);
    let hash = bcrypt::hash(PASSWORD, 10).unwrap();
    let wrong = "not-the-scrape-password-3e9a";
    let web = dir.join("web.yml");
    fs::write(
        &web,
        format!(
            "{TLS_ONLY}http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n{}",
            users(&hash)
        ),
    )
    .unwrap();
    let client = TlsClient::new(&pki.ca_pem_path);
    let healthy = |port| {
        client
            .exchange(port, &get("/-/healthy"))
            .is_ok_and(|tls| tls.response.status == 200)
    };
    let mut daemon = Daemon::start(
        &dir,
        &[
            "--config.file",
            "tests/testdata/good-minimal.toml",
            "--web.config.file",
            web.to_str().unwrap(),
            "--log.level",
            "debug",
        ],
        healthy,
    );
    let port = daemon.port();
    let right = basic(USER, PASSWORD);
    let call = |method: &str, path: &str, headers: &[(&str, &str)]| {
        client
            .exchange(port, &request(method, path, headers))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", daemon.stderr()))
            .response
    };

    let metrics = call("GET", "/metrics", &[("Authorization", &right)]);
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("mqtt_client_up{"), "{}", metrics.body);
    assert_eq!(metrics.header("x-content-type-options"), Some("nosniff"));
    let page = call("GET", "/", &[("Authorization", &right)]);
    assert_eq!(page.status, 200);
    for (path, body) in [
        ("/-/healthy", "mqtt-pulse is Healthy.\n"),
        ("/-/ready", "mqtt-pulse is Ready.\n"),
    ] {
        let response = call("GET", path, &[]);
        assert_eq!(
            (response.status, response.body.as_str()),
            (200, body),
            "{path}"
        );
    }
    for headers in [
        &[][..],
        &[("Authorization", basic(USER, wrong).as_str())][..],
    ] {
        for (method, path) in [("GET", "/metrics"), ("GET", "/"), ("POST", "/-/reload")] {
            let response = call(method, path, headers);
            assert_eq!(response.status, 401, "{method} {path} with {headers:?}");
            assert_eq!(
                response.header("www-authenticate"),
                Some("Basic realm=\"mqtt-pulse\"")
            );
        }
    }
    let reload = call("POST", "/-/reload", &[("Authorization", &right)]);
    assert_eq!(reload.status, 200, "{reload:?}");
    let too_large = (MAX_REQUEST_BODY * 2).to_string();
    let refused = call(
        "POST",
        "/-/reload",
        &[("Authorization", &right), ("Content-Length", &too_large)],
    );
    assert_eq!(refused.status, 413, "{refused:?}");

    // Plain HTTP gets nowhere.
    assert!(http(port, &get("/-/healthy")).is_err());

    assert!(daemon.terminate(DEADLINE).success(), "{}", daemon.stderr());
    let logs = daemon.stderr();
    assert!(
        logs.contains("serving HTTP") && logs.contains("tls=true"),
        "{logs}"
    );
    let encoded_right = right.trim_start_matches("Basic ").to_owned();
    let encoded_wrong = basic(USER, wrong).trim_start_matches("Basic ").to_owned();
    for secret in [
        PASSWORD,
        wrong,
        &hash,
        &hash[7..29],
        &encoded_right,
        &encoded_wrong,
    ] {
        for (what, text) in [
            ("logs", &logs),
            ("/metrics", &metrics.body),
            ("/", &page.body),
        ] {
            assert!(!text.contains(secret), "{what} show {secret:?}:\n{text}");
        }
    }
}

#[test]
fn sighup_and_post_reload_reread_the_web_config_and_a_bad_one_changes_nothing() {
    let dir = TempDir::new("web-daemon-reload");
    let web = dir.join("web.yml");
    let hash = |password: &str| bcrypt::hash(password, 4).unwrap();
    let rotated = "rotated-password-9c03";
    fs::write(&web, users(&hash(PASSWORD))).unwrap();
    let healthy = |port| http(port, &get("/-/healthy")).is_ok_and(|r| r.status == 200);
    let mut daemon = Daemon::start(
        &dir,
        &[
            "--config.file",
            "tests/testdata/good-minimal.toml",
            "--web.config.file",
            web.to_str().unwrap(),
        ],
        healthy,
    );
    let port = daemon.port();
    let call = |method: &str, path: &str, password: &str| {
        http(
            port,
            &request(method, path, &[("Authorization", &basic(USER, password))]),
        )
        .unwrap()
    };
    assert_eq!(call("GET", "/metrics", PASSWORD).status, 200);

    // POST /-/reload: the new password from this request on.
    fs::write(&web, users(&hash(rotated))).unwrap();
    let reloaded = call("POST", "/-/reload", PASSWORD);
    assert_eq!(reloaded.status, 200, "{reloaded:?}");
    assert!(
        reloaded.body.contains("web config reloaded"),
        "{reloaded:?}"
    );
    assert_eq!(call("GET", "/metrics", PASSWORD).status, 401);
    assert_eq!(call("GET", "/metrics", rotated).status, 200);

    // SIGHUP: back to the first password, seen once the reload is done.
    fs::write(&web, users(&hash(PASSWORD))).unwrap();
    daemon.signal(Signal::SIGHUP);
    let deadline = Instant::now() + DEADLINE;
    while call("GET", "/metrics", PASSWORD).status != 200 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            daemon.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(call("GET", "/metrics", rotated).status, 401);

    // Turning TLS on takes a restart: the reload fails and changes nothing,
    // and so does a file that does not parse.
    let pki = TestPki::generate(&dir);
    assert!(pki.server_cert_path.exists());
    for (file, expected) in [
        (
            format!("{TLS_ONLY}{}", users(&hash(rotated))),
            "tls_server_config was added (turning TLS on), which takes a restart".to_owned(),
        ),
        (
            format!("basic_auth_users:\n  {USER}: not-a-bcrypt-hash\n"),
            format!("{}:2:", web.display()),
        ),
    ] {
        fs::write(&web, &file).unwrap();
        let failed = call("POST", "/-/reload", PASSWORD);
        assert_eq!(failed.status, 500, "{failed:?}");
        assert!(failed.body.contains(&expected), "{failed:?}");
        let page = call("GET", "/metrics", PASSWORD);
        assert_eq!(
            page.status, 200,
            "still plain HTTP with the password before"
        );
        assert!(
            page.body
                .contains("mqtt_pulse_config_last_reload_successful 0\n"),
            "{page:?}"
        );
    }
    let stderr = daemon.stderr();
    assert!(
        !stderr.contains(PASSWORD) && !stderr.contains(rotated),
        "{stderr}"
    );
    assert!(daemon.terminate(DEADLINE).success());
}

#[test]
fn curl_scrapes_with_a_client_certificate_and_basic_auth() {
    let dir = TempDir::new("web-curl");
    let pki = TestPki::generate(&dir);
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let serving = Serving::start(web_config(
        &dir,
        &format!(
            "{}{}",
            mutual_tls("RequireAndVerifyClientCert", ""),
            users(&hash)
        ),
    ));
    let curl = |extra: &[&str]| {
        Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "10"])
            .args([
                "--resolve",
                &format!("localhost:{}:127.0.0.1", serving.port),
            ])
            .arg("--cacert")
            .arg(&pki.ca_pem_path)
            .args(["--write-out", "\n%{http_code} HTTP/%{http_version}"])
            .args(extra)
            .arg(format!("https://localhost:{}/metrics", serving.port))
            .output()
            .unwrap_or_else(|e| panic!("cannot run curl (apt-get install curl): {e}"))
    };
    let cert = pki.client_cert_path.to_str().unwrap();
    let key = pki.client_key_path.to_str().unwrap();
    let credentials = format!("{USER}:{PASSWORD}");

    let scraped = curl(&["--cert", cert, "--key", key, "--user", &credentials]);
    let stdout = String::from_utf8_lossy(&scraped.stdout);
    assert!(
        scraped.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&scraped.stderr)
    );
    // curl speaks HTTP/2 when the server offers it (ALPN), as here by default.
    assert!(
        stdout.ends_with("\n200 HTTP/2") && stdout.contains("mqtt_client_up{"),
        "{stdout}"
    );
    let http1 = curl(&[
        "--http1.1",
        "--cert",
        cert,
        "--key",
        key,
        "--user",
        &credentials,
    ]);
    assert!(String::from_utf8_lossy(&http1.stdout).ends_with("\n200 HTTP/1.1"));

    let no_password = curl(&["--cert", cert, "--key", key]);
    assert!(String::from_utf8_lossy(&no_password.stdout).ends_with("\n401 HTTP/2"));

    let no_certificate = curl(&["--user", &credentials]);
    assert!(
        !no_certificate.status.success(),
        "the handshake fails without a certificate"
    );
}

#[test]
fn the_healthcheck_subcommand_speaks_tls_when_the_web_config_turns_it_on() {
    let dir = TempDir::new("web-healthcheck");
    TestPki::generate(&dir);
    let serving = Serving::start(web_config(&dir, TLS_ONLY));
    let address = format!("127.0.0.1:{}", serving.port);
    let web_yml = dir.join("web.yml");
    let healthcheck = |with_web_config: bool| {
        let mut command = assert_cmd::Command::new(binary());
        command
            .args(["healthcheck", "--web.listen-address", &address])
            .timeout(DEADLINE);
        if with_web_config {
            command.arg("--web.config.file").arg(&web_yml);
        }
        for name in FLAG_ENV {
            command.env_remove(name);
        }
        command.output().unwrap()
    };
    let over_tls = healthcheck(true);
    assert!(
        over_tls.status.success(),
        "{}",
        String::from_utf8_lossy(&over_tls.stderr)
    );
    // Without the web config it speaks plain HTTP to a TLS port: unhealthy.
    let plain = healthcheck(false);
    assert_eq!(plain.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(
        stderr.starts_with(&format!("mqtt-pulse: healthcheck of {address} failed"))
            && stderr.lines().count() == 1,
        "{stderr}"
    );
}
