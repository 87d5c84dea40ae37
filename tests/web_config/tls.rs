//! `tls_server_config`: HTTPS with the test CA, client certificates by
//! `client_auth_type`, allowed SANs, TLS versions, ALPN, certificates replaced
//! on disk, `WebConfig::update`, inline PEM.

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::Path;

use mqtt_pulse::http;
use rustls::ProtocolVersion;

use crate::auth::users;
use crate::client::{TlsClient, der, get};
use crate::support::http::{basic, connect, request};
use crate::support::{TEST_CLIENT_CN, TempDir, TestPki};
use crate::{PASSWORD, Serving, TLS_ONLY, USER, mutual_tls, web_config};

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

/// Guards `client_allowed_sans`: on one config, a client whose certificate
/// names a listed SAN is admitted and a client whose certificate comes from
/// the same CA but names no listed SAN is refused (`AccessDenied`, the
/// verifier's answer), while without the list the same CA admits it. A
/// server that refused everyone, or took every certificate of the CA, fails.
#[test]
fn client_allowed_sans_admit_only_certificates_naming_a_listed_san() {
    let dir = TempDir::new("web-sans");
    let pki = TestPki::generate(&dir);
    let listed = TlsClient::with_identity(
        &pki.ca_pem_path,
        &pki.client_cert_path,
        &pki.client_key_path,
    );
    let unlisted = TlsClient::with_identity(
        &pki.ca_pem_path,
        &pki.other_client_cert_path,
        &pki.other_client_key_path,
    );

    let serving = Serving::start(web_config(
        &dir,
        &mutual_tls(
            "RequireAndVerifyClientCert",
            &format!("  client_allowed_sans: [ somebody.example, {TEST_CLIENT_CN} ]\n"),
        ),
    ));
    let tls = listed.exchange(serving.port, &get("/metrics")).unwrap();
    assert_eq!(tls.response.status, 200);
    let refused = unlisted
        .exchange(serving.port, &get("/metrics"))
        .expect_err("a certificate of the CA without a listed SAN");
    assert!(refused.to_string().contains("AccessDenied"), "{refused}");
    // The same config again, the list removed: the CA vouches for the other
    // client, so it was the list that refused it.
    let without_list = Serving::start(web_config(
        &dir,
        &mutual_tls("RequireAndVerifyClientCert", ""),
    ));
    let tls = unlisted
        .exchange(without_list.port, &get("/metrics"))
        .unwrap();
    assert_eq!(tls.response.status, 200);
}

/// Guards `cipher_suites` and `curve_preferences`: what the server
/// negotiates, read from the client's side of the handshake. A TLS 1.2
/// client offering every suite and group (its own first choices being
/// others) gets the one listed suite and group; a client offering only an
/// unlisted suite, or only an unlisted group, is refused; TLS 1.3 (whose
/// suites stay on, as in Go) still uses the listed group.
#[test]
fn cipher_suites_and_curve_preferences_decide_what_is_negotiated() {
    use rustls::crypto::ring::{default_provider, kx_group};
    use rustls::{CipherSuite, NamedGroup};

    let dir = TempDir::new("web-ciphers");
    let pki = TestPki::generate(&dir);
    // The test PKI's keys are ECDSA: an ECDSA suite, not the first TLS 1.2
    // suite of ring's (which a client offering everything would get).
    let listed_suite = CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256;
    let serving = Serving::start(web_config(
        &dir,
        &format!(
            "{TLS_ONLY}  cipher_suites: [ TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 ]\n  \
             curve_preferences: [ CurveP384 ]\n"
        ),
    ));
    let client =
        |provider, versions| TlsClient::with_provider(provider, &pki.ca_pem_path, versions);
    let tls12: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

    let everything = default_provider();
    assert_ne!(everything.cipher_suites[3].suite(), listed_suite);
    assert_ne!(everything.kx_groups[0].name(), NamedGroup::secp384r1);
    let connection = client(everything, tls12).handshake(serving.port).unwrap();
    assert_eq!(
        connection.negotiated_cipher_suite().map(|s| s.suite()),
        Some(listed_suite)
    );
    assert_eq!(
        connection.negotiated_key_exchange_group().map(|g| g.name()),
        Some(NamedGroup::secp384r1)
    );

    let mut unlisted_suite = default_provider();
    unlisted_suite
        .cipher_suites
        .retain(|s| s.suite() == CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256);
    let error = client(unlisted_suite, tls12)
        .handshake(serving.port)
        .expect_err("only an unlisted suite offered");
    assert!(error.to_string().contains("HandshakeFailure"), "{error}");

    let mut unlisted_group = default_provider();
    unlisted_group.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1];
    let error = client(unlisted_group, rustls::DEFAULT_VERSIONS)
        .handshake(serving.port)
        .expect_err("only unlisted groups offered");
    assert!(error.to_string().contains("HandshakeFailure"), "{error}");

    let connection = client(default_provider(), &[&rustls::version::TLS13])
        .handshake(serving.port)
        .unwrap();
    assert_eq!(
        connection.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        connection.negotiated_key_exchange_group().map(|g| g.name()),
        Some(NamedGroup::secp384r1)
    );
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
pub(crate) fn replace_atomically(target: &Path, content: &[u8]) {
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
