//! Whole web-config files: the exporter-toolkit documentation's example and
//! the documented format with every key set.

use std::fs;

use crate::client::{TlsClient, get};
use crate::support::http::{basic, request};
use crate::support::{TEST_CLIENT_CN, TempDir, TestPki};
use crate::{PASSWORD, Serving, USER, web_config};

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
