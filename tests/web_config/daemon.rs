//! The real binary with `--web.config.file`: startup errors as one line, a
//! daemon end to end (HTTPS, basic auth, reload), `curl`, the healthcheck.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mqtt_pulse::http::{MAX_REQUEST_BODY, WebConfig};
use nix::sys::signal::Signal;

use crate::auth::users;
use crate::client::{TlsClient, get};
use crate::support::daemon::{Daemon, assert_fails_with_one_line, command, run};
use crate::support::http::{basic, request, send};
use crate::support::metrics::sample;
use crate::support::{Broker, TempDir, TestPki, free_port};
use crate::{DEADLINE, PASSWORD, Serving, TLS_ONLY, USER, mutual_tls, web_config};

/// Runs the daemon with `web_config` until it exits (it must, within 10 s).
pub(crate) fn start_and_fail(web_config: &Path) -> std::process::Output {
    run(&[
        "--config.file",
        "tests/testdata/good-minimal.toml",
        "--web.listen-address",
        &format!("127.0.0.1:{}", free_port()),
        "--web.config.file",
        web_config.to_str().unwrap(),
    ])
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
        assert_fails_with_one_line(&output, &format!("mqtt-pulse: {expected}"), &path);
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
    assert_fails_with_one_line(
        &start_and_fail(&path),
        &format!("mqtt-pulse: {expected}"),
        "mismatched key",
    );
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
    assert!(send(port, &get("/-/healthy")).is_err());

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
    let healthy = |port| send(port, &get("/-/healthy")).is_ok_and(|r| r.status == 200);
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
        send(
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

/// Guards what a daemon reload may not change in the web config, as the
/// README and `WebConfig::update` promise: a file that changes `http2`, or
/// one that turns TLS off, takes a restart, so its reload answers 500 with
/// the reason, sets `mqtt_pulse_config_last_reload_successful 0`, and changes
/// nothing: the port still speaks TLS and still offers h2 by ALPN. The same
/// reload of the file the daemon started with then succeeds.
#[test]
fn a_daemon_reload_that_changes_http2_or_turns_tls_off_fails_and_changes_nothing() {
    let broker = Broker::start();
    let dir = TempDir::new("web-daemon-restart-only");
    let pki = TestPki::generate(&dir);
    let config = dir.join("mqtt-pulse.toml");
    fs::write(
        &config,
        format!("[[target]]\nname = \"web\"\nurl = \"{}\"\n", broker.url()),
    )
    .unwrap();
    let web = dir.join("web.yml");
    fs::write(&web, TLS_ONLY).unwrap();
    let client = TlsClient::build(
        &pki.ca_pem_path,
        None,
        rustls::DEFAULT_VERSIONS,
        &[b"h2", b"http/1.1"],
    );
    let daemon = Daemon::start(
        &dir,
        &[
            "--config.file",
            config.to_str().unwrap(),
            "--web.config.file",
            web.to_str().unwrap(),
        ],
        |port| {
            client
                .exchange(port, &get("/-/healthy"))
                .is_ok_and(|tls| tls.response.status == 200)
        },
    );
    let port = daemon.port();
    let alpn = || {
        client
            .handshake(port)
            .unwrap_or_else(|e| panic!("no TLS handshake ({e}):\n{}", daemon.stderr()))
            .alpn_protocol()
            .map(<[u8]>::to_vec)
    };
    let exchange = |request: &[u8]| client.exchange(port, request).unwrap().response;
    let reload_successful = || {
        sample(
            &exchange(&get("/metrics")).body,
            "mqtt_pulse_config_last_reload_successful",
        )
    };
    assert_eq!(alpn(), Some(b"h2".to_vec()));

    for (file, reason) in [
        (
            format!("{TLS_ONLY}http_server_config:\n  http2: false\n"),
            "http_server_config.http2 changed, which takes a restart",
        ),
        // An empty web config serves plain HTTP.
        (
            String::new(),
            "tls_server_config was removed (turning TLS off), which takes a restart",
        ),
    ] {
        fs::write(&web, &file).unwrap();
        let answer = exchange(&request("POST", "/-/reload", &[]));
        assert_eq!(answer.status, 500, "{file:?}: {answer:?}");
        assert!(answer.body.contains(reason), "{file:?}: {answer:?}");
        assert_eq!(reload_successful(), Some(0.0), "{file:?}");
        assert_eq!(alpn(), Some(b"h2".to_vec()), "after {file:?}");
    }

    fs::write(&web, TLS_ONLY).unwrap();
    let answer = exchange(&request("POST", "/-/reload", &[]));
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(reload_successful(), Some(1.0));
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
        let mut command = assert_cmd::Command::from_std(command());
        command
            .args(["healthcheck", "--web.listen-address", &address])
            .timeout(DEADLINE);
        if with_web_config {
            command.arg("--web.config.file").arg(&web_yml);
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
