//! `basic_auth_users`, `http_server_config.headers` and the rate limit.

use crate::client::get;
use crate::support::TempDir;
use crate::support::http::{basic, request, send};
use crate::support::metrics::sample;
use crate::{PASSWORD, Serving, USER, exporter, web_config};
use mqtt_pulse::http::Server;

/// How many failed logins an address may have before it is answered `429`.
const FAILURE_BUDGET: usize = 5;

pub(crate) fn users(hash: &str) -> String {
    format!("basic_auth_users:\n  {USER}: {hash}\n")
}

/// `GET /metrics` on `port` with the right credentials, which must answer
/// `200`: the page.
pub(crate) fn metrics_as_user(port: u16) -> String {
    metrics_as(port, USER, PASSWORD)
}

/// `GET /metrics` on `port` as `user` with `password`, which must answer
/// `200`: the page.
pub(crate) fn metrics_as(port: u16, user: &str, password: &str) -> String {
    let credentials = basic(user, password);
    let response = send(
        port,
        &request("GET", "/metrics", &[("Authorization", &credentials)]),
    )
    .unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    response.body
}

/// `mqtt_pulse_web_auth_refusals_total{reason}` on a `/metrics` page.
pub(crate) fn refusals(page: &str, reason: &str) -> Option<f64> {
    sample(
        page,
        &format!(r#"mqtt_pulse_web_auth_refusals_total{{reason="{reason}"}}"#),
    )
}

#[test]
fn basic_auth_needs_the_right_password_and_answers_401_with_a_challenge_then_429_per_address() {
    let dir = TempDir::new("web-basic-auth");
    // What `htpasswd -nBC 10` makes.
    let hash = bcrypt::hash(PASSWORD, 10).unwrap();
    let config = web_config(&dir, &users(&hash));
    assert!(!format!("{config:?}").contains(&hash), "{config:?}");
    let serving = Serving::start(config);
    let port = serving.port;
    let right = basic(USER, PASSWORD);

    for path in ["/metrics", "/"] {
        let response = send(port, &request("GET", path, &[("Authorization", &right)])).unwrap();
        assert_eq!(response.status, 200, "{path}: {response:?}");
    }
    // Remembered after the first pass, still right.
    let again = send(
        port,
        &request("GET", "/metrics", &[("Authorization", &right)]),
    )
    .unwrap();
    assert!(again.body.contains("mqtt_client_up{"));

    // Whether each refusal carries a user and password (which costs a hash,
    // and counts against the address's failure budget).
    let refusals = [
        ("missing", None, false),
        (
            "wrong password",
            Some(basic(USER, "scrape-me-7d41c1")),
            true,
        ),
        ("empty password", Some(basic(USER, "")), true),
        ("unknown user", Some(basic("grafana", PASSWORD)), true),
        (
            "user in the wrong case",
            Some(basic("Prometheus", PASSWORD)),
            true,
        ),
        ("not basic", Some(format!("Bearer {PASSWORD}")), false),
        ("not base64", Some("Basic !!!".to_owned()), false),
    ];
    let mut failed = 0;
    for path in ["/metrics", "/", "/no-such-page"] {
        for (what, authorization, hashed) in &refusals {
            let headers: Vec<(&str, &str)> = authorization
                .iter()
                .map(|value| ("Authorization", value.as_str()))
                .collect();
            let response = send(port, &request("GET", path, &headers)).unwrap();
            failed += usize::from(*hashed);
            if *hashed && failed > FAILURE_BUDGET {
                // This address has used its budget: refused without a hash.
                assert_eq!(response.status, 429, "{what} on {path}: {response:?}");
                let retry_after: u64 = response.header("retry-after").unwrap().parse().unwrap();
                assert!((1..=12).contains(&retry_after), "{retry_after}");
            } else {
                assert_eq!(response.status, 401, "{what} on {path}: {response:?}");
                assert_eq!(
                    response.header("www-authenticate"),
                    Some("Basic realm=\"mqtt-pulse\""),
                    "{what} on {path}"
                );
            }
            assert!(
                !response.body.contains("mqtt_client"),
                "{what}: {}",
                response.body
            );
        }
    }
    // A password that passed before is remembered: the budget does not apply.
    let unknown = send(
        port,
        &request("GET", "/no-such-page", &[("Authorization", &right)]),
    );
    assert_eq!(unknown.unwrap().status, 404, "authenticated, then routed");
}

#[test]
fn refusals_are_counted_by_reason_on_the_exporters_registry() {
    let dir = TempDir::new("web-auth-refusals");
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let config = web_config(&dir, &users(&hash));
    let (events, handle) = exporter(1);
    config.register_metrics(handle.registry()).unwrap();
    let serving = Serving::with(Server::new().with_web_config(config), (events, handle));
    let port = serving.port;
    let page = metrics_as_user(port);
    for reason in ["unauthorized", "too_many_failures", "busy"] {
        assert_eq!(refusals(&page, reason), Some(0.0), "{reason}:\n{page}");
    }

    // No credentials: 401, no hash, no failure against the address.
    assert_eq!(
        send(port, &request("GET", "/metrics", &[])).unwrap().status,
        401
    );
    // Wrong ones: 401 until the budget is used, then 429.
    let wrong = basic(USER, "not-it");
    let mut statuses = Vec::new();
    for _ in 0..FAILURE_BUDGET + 2 {
        let response = send(port, &request("GET", "/", &[("Authorization", &wrong)])).unwrap();
        statuses.push(response.status);
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 401).count(),
        FAILURE_BUDGET
    );
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 2);

    let page = metrics_as_user(port);
    assert_eq!(
        refusals(&page, "unauthorized"),
        Some(1.0 + FAILURE_BUDGET as f64)
    );
    assert_eq!(refusals(&page, "too_many_failures"), Some(2.0));
    assert_eq!(refusals(&page, "busy"), Some(0.0));
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
            let response = send(serving.port, &request(method, path, &[])).unwrap();
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
        .map(|_| send(serving.port, &get("/metrics")).unwrap().status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // An interval of 0 switches it off, as documented.
    let off = Serving::start(web_config(&dir, "rate_limit:\n  interval: 0\n  burst: 1\n"));
    assert!((0..5).all(|_| send(off.port, &get("/metrics")).unwrap().status == 200));
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
        let response = send(serving.port, &request("GET", path, &headers)).unwrap();
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
