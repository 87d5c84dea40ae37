//! The config file: one bad file per rule with its exact message, good files
//! with their merged values, the shipped example, secrets kept out of every
//! message, and arbitrary input never panicking.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mqtt_pulse::config::{Config, ConfigError, Location, Problem, diff};
use mqtt_pulse::connection::{Backoff, ClientCertificate, TlsOptions};
use mqtt_pulse::exporter::otlp::OtlpProtocol;
use proptest::prelude::*;

/// The password used in every secrets check; "xyzzy" appears nowhere else.
const SECRET: &str = "hunter2-xyzzy";
const SECRET_PART: &str = "xyzzy";

fn testdata(name: &str) -> PathBuf {
    Path::new("tests/testdata").join(name)
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// Every rule, one small file each, with the exact line a user sees.
const BAD_CONFIGS: &[(&str, &str)] = &[
    (
        "bad-syntax.toml",
        "tests/testdata/bad-syntax.toml:3:34: TOML syntax error: invalid basic string, expected `\"`",
    ),
    (
        "bad-duplicate-key.toml",
        "tests/testdata/bad-duplicate-key.toml:4:1: TOML syntax error: duplicate key `url`",
    ),
    (
        "bad-not-utf8.toml",
        "tests/testdata/bad-not-utf8.toml:2:15: the file is not UTF-8 text",
    ),
    (
        "bad-unknown-key.toml",
        "tests/testdata/bad-unknown-key.toml:4:1: unknown key `keep_alvie` in [[target]] \"plant-a\"; did you mean `keep_alive`?",
    ),
    (
        "bad-unknown-top-level-key.toml",
        "tests/testdata/bad-unknown-top-level-key.toml:1:3: unknown key `targets` at the top level; did you mean `target`?",
    ),
    (
        "bad-unknown-tls-key.toml",
        "tests/testdata/bad-unknown-tls-key.toml:5:1: unknown key `ca` in `tls` of [[target]] \"plant-a\"; did you mean `ca_file`?",
    ),
    (
        "bad-misplaced-tls-key.toml",
        "tests/testdata/bad-misplaced-tls-key.toml:4:1: unknown key `ca_file` in [[target]] \"plant-a\"; did you mean `tls.ca_file`?",
    ),
    (
        "bad-unknown-backoff-key.toml",
        "tests/testdata/bad-unknown-backoff-key.toml:2:13: unknown key `initail` in `backoff` of [defaults]; did you mean `initial`?",
    ),
    (
        "bad-otlp-unknown-key.toml",
        "tests/testdata/bad-otlp-unknown-key.toml:7:1: unknown key `intervall` in [otlp]; did you mean `interval`?",
    ),
    (
        "bad-not-a-default.toml",
        "tests/testdata/bad-not-a-default.toml:2:1: `url` cannot be set in [defaults]; set it in each [[target]]",
    ),
    (
        "bad-wrong-type.toml",
        "tests/testdata/bad-wrong-type.toml:4:14: wrong type for `keep_alive` in [[target]] \"plant-a\": expected a duration string such as \"5s\" or \"250ms\", found an integer",
    ),
    (
        "bad-wrong-type-bool.toml",
        "tests/testdata/bad-wrong-type-bool.toml:4:17: wrong type for `clean_session` in [[target]] \"plant-a\": expected true or false, found a string",
    ),
    (
        "bad-target-not-array.toml",
        "tests/testdata/bad-target-not-array.toml:1:1: wrong type for `target` at the top level: expected an array of tables, written [[target]], found a table",
    ),
    (
        "bad-duration.toml",
        "tests/testdata/bad-duration.toml:4:19: bad `connect_timeout` in [[target]] \"plant-a\": \"5x\" is not a duration such as \"5s\" or \"250ms\" (unknown time unit \"x\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations))",
    ),
    (
        "bad-keep-alive-fraction.toml",
        "tests/testdata/bad-keep-alive-fraction.toml:2:14: bad `keep_alive` in [defaults]: must be whole seconds from 1s to 65535s, not 1s 500ms",
    ),
    (
        "bad-keep-alive-range.toml",
        "tests/testdata/bad-keep-alive-range.toml:4:14: bad `keep_alive` in [[target]] \"plant-a\": must be whole seconds from 1s to 65535s, not 20h",
    ),
    (
        "bad-zero-timeout.toml",
        "tests/testdata/bad-zero-timeout.toml:4:16: bad `ping_timeout` in [[target]] \"plant-a\": must be longer than zero",
    ),
    (
        "bad-backoff-max-below-initial.toml",
        "tests/testdata/bad-backoff-max-below-initial.toml:7:19: bad `max` in `backoff` of [[target]] \"plant-a\": must not be shorter than `initial` (1s)",
    ),
    (
        "bad-url.toml",
        "tests/testdata/bad-url.toml:3:7: bad `url` in [[target]] \"plant-a\": must start with mqtt://, mqtts://, ws:// or wss://, like \"mqtt://broker.example:1883\"",
    ),
    (
        "bad-url-scheme.toml",
        "tests/testdata/bad-url-scheme.toml:3:7: bad `url` in [[target]] \"plant-a\": unsupported scheme \"http\"; use mqtt://, mqtts://, ws:// or wss://",
    ),
    (
        "bad-url-no-host.toml",
        "tests/testdata/bad-url-no-host.toml:3:7: bad `url` in [[target]] \"plant-a\": the broker URL has no host",
    ),
    (
        "bad-url-credentials.toml",
        "tests/testdata/bad-url-credentials.toml:3:7: bad `url` in [[target]] \"plant-a\": must not contain a user name or password; set `username` and `password_file`",
    ),
    (
        "bad-missing-name.toml",
        "tests/testdata/bad-missing-name.toml:5:1: missing `name` in [[target]] #2",
    ),
    (
        "bad-empty-name.toml",
        "tests/testdata/bad-empty-name.toml:2:8: bad `name` in [[target]] #1: must not be empty",
    ),
    (
        "bad-missing-url.toml",
        "tests/testdata/bad-missing-url.toml:1:1: missing `url` in [[target]] \"plant-a\"",
    ),
    (
        "bad-duplicate-name.toml",
        "tests/testdata/bad-duplicate-name.toml:6:8: duplicate target name \"plant-a\": line 2 already uses it",
    ),
    (
        "bad-duplicate-client-id.toml",
        "tests/testdata/bad-duplicate-client-id.toml:9:13: duplicate client id \"probe\" in [[target]] \"plant-b\": [[target]] \"plant-a\" at line 4 uses it too",
    ),
    (
        "bad-duplicate-derived-client-id.toml",
        "tests/testdata/bad-duplicate-derived-client-id.toml:8:13: duplicate client id \"mqtt-pulse-plant-a\" in [[target]] \"plant-b\": [[target]] \"plant-a\" at line 2 uses it too (derived from its name)",
    ),
    (
        "bad-duplicate-client-id-derived-later.toml",
        "tests/testdata/bad-duplicate-client-id-derived-later.toml:7:8: duplicate client id \"mqtt-pulse-plant-b\" in [[target]] \"plant-b\" (derived from its name): [[target]] \"plant-a\" at line 4 uses it too",
    ),
    (
        "bad-password-file-missing.toml",
        "tests/testdata/bad-password-file-missing.toml:5:17: cannot read `password_file` in [[target]] \"plant-a\": tests/testdata/secrets/missing: No such file or directory (os error 2)",
    ),
    (
        "bad-password-file-directory.toml",
        "tests/testdata/bad-password-file-directory.toml:5:17: cannot read `password_file` in [[target]] \"plant-a\": tests/testdata/secrets: is a directory",
    ),
    (
        "bad-ca-file-missing.toml",
        "tests/testdata/bad-ca-file-missing.toml:5:11: cannot read `ca_file` in `tls` of [[target]] \"plant-a\": tests/testdata/pki/missing-ca.pem: No such file or directory (os error 2)",
    ),
    (
        "bad-cert-file-missing.toml",
        "tests/testdata/bad-cert-file-missing.toml:5:13: cannot read `cert_file` in `tls` of [[target]] \"plant-a\": tests/testdata/pki/missing-client.pem: No such file or directory (os error 2)",
    ),
    (
        "bad-key-file-missing.toml",
        "tests/testdata/bad-key-file-missing.toml:3:12: cannot read `key_file` in `tls` of [defaults]: tests/testdata/pki/missing-client.key: No such file or directory (os error 2)",
    ),
    (
        "bad-cert-without-key.toml",
        "tests/testdata/bad-cert-without-key.toml:6:1: `cert_file` without `key_file` in `tls` of [[target]] \"plant-a\": set both for a client certificate, or neither",
    ),
    (
        "bad-key-without-cert.toml",
        "tests/testdata/bad-key-without-cert.toml:4:9: `key_file` without `cert_file` in `tls` of [[target]] \"plant-a\": set both for a client certificate, or neither",
    ),
    (
        "bad-tls-on-plain-url.toml",
        "tests/testdata/bad-tls-on-plain-url.toml:4:1: `tls` is set in [[target]] \"plant-a\" but its url is mqtt://; use mqtts:// or wss://",
    ),
    (
        "bad-password-and-file.toml",
        "tests/testdata/bad-password-and-file.toml:6:1: `password_file` and `password` are both set in [[target]] \"plant-a\"; keep one",
    ),
    (
        "bad-password-without-username.toml",
        "tests/testdata/bad-password-without-username.toml:4:1: `password_file` without `username` in [[target]] \"plant-a\": MQTT sends a password only with a user name",
    ),
    (
        "bad-label-name.toml",
        "tests/testdata/bad-label-name.toml:4:12: bad label name `2site` in `labels` of [[target]] \"plant-a\": label names match [a-zA-Z_][a-zA-Z0-9_]*",
    ),
    (
        "bad-label-prometheus-reserved.toml",
        "tests/testdata/bad-label-prometheus-reserved.toml:5:1: bad label name `__name__` in `labels` of [[target]] \"plant-a\": names starting with __ are reserved for Prometheus",
    ),
    (
        "bad-label-reserved.toml",
        "tests/testdata/bad-label-reserved.toml:2:12: bad label name `broker` in `labels` of [defaults]: mqtt-pulse sets this label itself (client_id, broker, status, reason and type are taken)",
    ),
    (
        "bad-label-value.toml",
        "tests/testdata/bad-label-value.toml:4:20: wrong type for `floor` in `labels` of [[target]] \"plant-a\": expected a string, found an integer",
    ),
    (
        "bad-no-targets.toml",
        "tests/testdata/bad-no-targets.toml: no [[target]] in the file; add at least one target to monitor",
    ),
    (
        "bad-empty-target-list.toml",
        "tests/testdata/bad-empty-target-list.toml:1:10: no [[target]] in the file; add at least one target to monitor",
    ),
    (
        "bad-otlp-protocol.toml",
        "tests/testdata/bad-otlp-protocol.toml:6:12: bad `protocol` in [otlp]: must be \"grpc\" or \"http/protobuf\", not \"http/json\"",
    ),
    (
        "bad-otlp-endpoint.toml",
        "tests/testdata/bad-otlp-endpoint.toml:6:12: bad `endpoint` in [otlp]: unsupported scheme \"grpc\"; use http:// or https://",
    ),
    (
        "bad-otlp-header-value.toml",
        "tests/testdata/bad-otlp-header-value.toml:6:17: bad `authorization` in `headers` of [otlp]: a header value is visible ASCII, spaces and tabs only",
    ),
];

#[test]
fn each_bad_config_fails_with_its_exact_message() {
    let mut wrong = Vec::new();
    for (file, expected) in BAD_CONFIGS {
        match Config::load(&testdata(file)) {
            Ok(_) => wrong.push(format!("{file}: loaded, expected {expected:?}")),
            Err(error) if error.to_string() != *expected => {
                wrong.push(format!(
                    "{file}:\n  got      {error}\n  expected {expected}"
                ));
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_bad_file_in_testdata_is_in_the_table() {
    let listed: Vec<_> = BAD_CONFIGS.iter().map(|(file, _)| *file).collect();
    for entry in std::fs::read_dir("tests/testdata").unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with("bad-") {
            assert!(
                listed.contains(&name.as_str()),
                "{name} has no expected message"
            );
        }
    }
}

#[test]
fn an_unreadable_file_is_named_with_the_os_error_and_no_line() {
    let error = Config::load(&testdata("no-such-file.toml")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "tests/testdata/no-such-file.toml: cannot read the config file: No such file or directory (os error 2)"
    );
    assert!(matches!(error, ConfigError::Read { .. }));
    assert_eq!(error.location(), None);

    let error = Config::load(&testdata("pki")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "tests/testdata/pki: cannot read the config file: Is a directory (os error 21)"
    );
}

#[test]
fn errors_expose_their_problem_and_location() {
    let error = Config::load(&testdata("bad-unknown-key.toml")).unwrap_err();
    assert_eq!(error.location(), Some(Location { line: 4, column: 1 }));
    match error.problem() {
        Some(Problem::UnknownKey {
            key, suggestion, ..
        }) => {
            assert_eq!(key, "keep_alvie");
            assert_eq!(suggestion.as_deref(), Some("keep_alive"));
        }
        other => panic!("expected an unknown key, got {other:?}"),
    }
}

#[test]
fn a_minimal_target_gets_every_default_and_a_derived_client_id() {
    let config = Config::load(&testdata("good-minimal.toml")).unwrap();
    assert_eq!(
        config.origin(),
        Some(testdata("good-minimal.toml").as_path())
    );
    assert!(config.warnings().is_empty());
    assert!(config.otlp().is_none());
    let [target] = config.targets() else {
        panic!("expected one target: {config:?}");
    };
    assert_eq!(target.name(), "plant-a");
    assert_eq!(target.location(), Location { line: 1, column: 1 });
    let options = target.options();
    assert_eq!(options.url().as_str(), "mqtt://broker.example");
    assert_eq!(options.broker(), "broker.example:1883");
    assert_eq!(options.client_id().as_str(), "mqtt-pulse-plant-a");
    assert_eq!(options.username(), None);
    assert_eq!(options.password_file(), None);
    assert!(!options.has_inline_password());
    assert_eq!(options.keep_alive(), secs(5));
    assert_eq!(options.connect_timeout(), secs(5));
    assert_eq!(options.ping_timeout(), ms(2500));
    assert_eq!(options.backoff(), Backoff::default());
    assert!(options.clean_session());
    assert!(options.labels().is_empty());
    assert_eq!(options.tls(), &TlsOptions::default());
}

#[test]
fn defaults_merge_into_targets_and_targets_win() {
    let config = Config::load(&testdata("good-full.toml")).unwrap();
    let names: Vec<_> = config.targets().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["plain", "tls-own", "websocket"]);
    let pki = |file: &str| testdata("pki").join(file);
    let labels = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };

    let plain = config.target("plain").unwrap().options();
    assert_eq!(plain.client_id().as_str(), "mqtt-pulse-plain");
    assert_eq!(plain.keep_alive(), secs(10));
    assert_eq!(plain.connect_timeout(), secs(3));
    assert_eq!(plain.ping_timeout(), secs(4));
    assert_eq!(
        plain.backoff(),
        Backoff {
            initial: secs(1),
            max: secs(60)
        }
    );
    assert!(!plain.clean_session());
    assert_eq!(
        plain.labels(),
        &labels(&[("env", "prod"), ("site", "unknown")])
    );
    // [defaults.tls] is for TLS targets only.
    assert_eq!(plain.tls(), &TlsOptions::default());

    let own = config.target("tls-own").unwrap().options();
    assert_eq!(own.client_id().as_str(), "probe-tls");
    assert_eq!(own.username(), Some("probe"));
    assert_eq!(
        own.password_file(),
        Some(testdata("secrets/password").as_path())
    );
    assert_eq!(own.keep_alive(), secs(60));
    assert_eq!(own.connect_timeout(), ms(250));
    assert_eq!(own.ping_timeout(), ms(1500));
    // `max` from the target, `initial` from [defaults].
    assert_eq!(
        own.backoff(),
        Backoff {
            initial: secs(1),
            max: secs(5)
        }
    );
    assert!(own.clean_session());
    assert_eq!(
        own.labels(),
        &labels(&[("env", "prod"), ("floor", "3"), ("site", "north")])
    );
    assert_eq!(
        own.tls(),
        &TlsOptions {
            ca_file: Some(pki("ca.pem")),
            client_auth: Some(ClientCertificate {
                cert_file: pki("client.pem"),
                key_file: pki("client.key"),
            }),
            insecure_skip_verify: true,
        }
    );

    let websocket = config.target("websocket").unwrap().options();
    assert_eq!(websocket.broker(), "broker.example:443");
    assert_eq!(websocket.tls().ca_file, Some(pki("ca.pem")));
    assert!(websocket.tls().client_auth.is_some());
    assert!(!websocket.tls().insecure_skip_verify);

    let otlp = config.otlp().unwrap();
    assert_eq!(
        otlp.endpoint().map(|url| url.as_str()),
        Some("https://collector.example:4318/v1/metrics")
    );
    assert_eq!(otlp.protocol(), OtlpProtocol::HttpProtobuf);
    assert_eq!(otlp.interval(), Some(secs(15)));
    assert_eq!(otlp.timeout(), Some(secs(2)));
    assert_eq!(
        otlp.headers(),
        &labels(&[
            ("authorization", "Bearer not-a-real-token"),
            ("x-scope-orgid", "plant")
        ])
    );
    assert!(!format!("{otlp:?}").contains("not-a-real-token"));
}

#[test]
fn connection_options_carry_the_target_settings() {
    let config = Config::load(&testdata("good-full.toml")).unwrap();
    let target = config.target("tls-own").unwrap();
    let options = target.options();
    assert_eq!(options.client_id().as_str(), "probe-tls");
    assert_eq!(options.broker(), "broker.example:8883");
    let debug = format!("{options:?}");
    for expected in [
        "keep_alive: 60s",
        "ping_timeout: 1.5s",
        "connect_timeout: 250ms",
        "username: Some(\"probe\")",
        "secrets/password",
        "insecure_skip_verify: true",
    ] {
        assert!(debug.contains(expected), "{expected} not in {debug}");
    }
}

#[test]
fn an_empty_otlp_table_turns_otlp_on_with_sdk_defaults() {
    let config = Config::load(&testdata("good-empty-otlp.toml")).unwrap();
    let otlp = config.otlp().unwrap();
    assert_eq!(otlp.endpoint(), None);
    assert_eq!(otlp.protocol(), OtlpProtocol::Grpc);
    assert_eq!(otlp.interval(), None);
    assert_eq!(otlp.timeout(), None);
    assert!(otlp.headers().is_empty());
}

#[test]
fn risky_settings_load_with_a_warning_that_names_the_place() {
    let config = Config::load(&testdata("good-inline-password.toml")).unwrap();
    assert!(config.targets()[0].options().has_inline_password());
    assert_eq!(
        config.warnings(),
        [
            "tests/testdata/good-inline-password.toml:5:1: warning: inline `password` in [[target]] \"plant-a\": put it in a file readable only by mqtt-pulse and set `password_file`"
        ]
    );

    let config = Config::load(&testdata("good-full.toml")).unwrap();
    assert_eq!(
        config.warnings(),
        [
            "tests/testdata/good-full.toml:34:1: warning: `insecure_skip_verify` is on in `tls` of [[target]] \"tls-own\": the broker's certificate is not verified"
        ]
    );
}

#[test]
fn job_and_instance_labels_load_with_a_warning_about_exported_names() {
    let text = "[defaults]\nlabels = { job = \"mqtt\" }\n\n[[target]]\nname = \"a\"\nurl = \"mqtt://h\"\nlabels = { instance = \"a\", site = \"north\" }\n";
    let config = Config::parse(text, Path::new("x.toml")).unwrap();
    assert_eq!(
        config.warnings(),
        [
            "x.toml:2:12: warning: label `job` in `labels` of [defaults]: Prometheus renames it to `exported_job` unless the scrape config sets `honor_labels: true`",
            "x.toml:7:12: warning: label `instance` in `labels` of [[target]] \"a\": Prometheus renames it to `exported_instance` unless the scrape config sets `honor_labels: true`",
        ]
    );
    assert_eq!(config.targets()[0].options().labels().len(), 3);
}

#[test]
fn without_a_file_the_local_broker_is_monitored() {
    let config = Config::load_or_default(None).unwrap();
    assert_eq!(config.origin(), None);
    let [target] = config.targets() else {
        panic!("expected one target: {config:?}");
    };
    assert_eq!(target.name(), "local");
    let options = target.options();
    assert_eq!(options.url().as_str(), "mqtt://127.0.0.1:1883");
    assert_eq!(options.client_id().as_str(), "mqtt-pulse-local");
    assert_eq!(options.broker(), "127.0.0.1:1883");
    assert!(config.otlp().is_none());
    assert!(config.warnings().is_empty());
    assert_eq!(target, &Config::default_local().targets()[0]);
}

#[test]
fn a_path_given_is_loaded_not_defaulted() {
    let error = Config::load_or_default(Some(&testdata("no-such-file.toml"))).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }));
}

#[test]
fn the_example_file_loads_as_shipped_and_shows_every_key() {
    let path = Path::new("mqtt-pulse.example.toml");
    let config = Config::load(path).unwrap();
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    let names: Vec<_> = config.targets().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["plant-a", "lab"]);
    assert_eq!(
        config.target("lab").unwrap().options().client_id().as_str(),
        "mqtt-pulse-lab"
    );
    assert!(config.otlp().is_some());

    let text = std::fs::read_to_string(path).unwrap();
    for key in [
        "[defaults]",
        "[defaults.tls]",
        "[[target]]",
        "[target.tls]",
        "[otlp]",
        "name =",
        "url =",
        "client_id =",
        "username =",
        "password_file =",
        "password =",
        "keep_alive =",
        "connect_timeout =",
        "ping_timeout =",
        "backoff = { initial =",
        "max =",
        "clean_session =",
        "labels =",
        "ca_file =",
        "cert_file =",
        "key_file =",
        "insecure_skip_verify =",
        "endpoint =",
        "protocol =",
        "interval =",
        "timeout =",
        "headers =",
    ] {
        assert!(text.contains(key), "the example does not show {key}");
    }
}

#[test]
fn relative_paths_are_relative_to_the_config_file() {
    let text = "[[target]]\nname = \"a\"\nurl = \"mqtts://h\"\ntls.ca_file = \"pki/ca.pem\"\n";
    let config = Config::parse(text, &testdata("virtual.toml")).unwrap();
    assert_eq!(
        config.targets()[0].options().tls().ca_file.as_deref(),
        Some(testdata("pki/ca.pem").as_path())
    );
    let error = Config::parse(text, Path::new("elsewhere/virtual.toml")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "elsewhere/virtual.toml:4:15: cannot read `ca_file` in `tls` of [[target]] \"a\": elsewhere/pki/ca.pem: No such file or directory (os error 2)"
    );
}

#[test]
fn a_problem_is_found_wherever_defaults_are_written() {
    // [defaults] after the targets still applies to them.
    let text = "[[target]]\nname = \"a\"\nurl = \"mqtt://h\"\n\n[defaults]\nkeep_alive = \"7s\"\n";
    let config = Config::parse(text, Path::new("x.toml")).unwrap();
    assert_eq!(config.targets()[0].options().keep_alive(), secs(7));
}

#[test]
fn the_number_of_targets_and_the_length_of_labels_are_bounded_with_a_clear_error() {
    use mqtt_pulse::config::MAX_TARGETS;
    use mqtt_pulse::connection::{MAX_LABEL_NAME_LENGTH, MAX_LABEL_VALUE_LENGTH};
    let origin = Path::new("big.toml");
    let targets = |count: usize| {
        (0..count)
            .map(|i| format!("[[target]]\nname = \"t{i}\"\nurl = \"mqtt://h\"\n"))
            .collect::<String>()
    };
    assert_eq!(
        Config::parse(&targets(MAX_TARGETS), origin)
            .unwrap()
            .targets()
            .len(),
        MAX_TARGETS
    );
    let error = Config::parse(&targets(MAX_TARGETS + 1), origin).unwrap_err();
    // Pointing at the first target too many: three lines per target.
    assert_eq!(
        error.to_string(),
        format!(
            "big.toml:{}:1: {} targets; one mqtt-pulse process monitors at most {MAX_TARGETS}: \
             split them over several instances",
            3 * MAX_TARGETS + 1,
            MAX_TARGETS + 1
        )
    );

    let target = |extra: &str| format!("[[target]]\nname = \"a\"\nurl = \"mqtt://h\"\n{extra}");
    let long_value = "v".repeat(MAX_LABEL_VALUE_LENGTH);
    let long_name = "n".repeat(MAX_LABEL_NAME_LENGTH);
    let fits = target(&format!("labels = {{ {long_name} = \"{long_value}\" }}\n"));
    assert!(Config::parse(&fits, origin).is_ok());
    let fits = target(&format!("client_id = \"{long_value}\"\n"));
    assert!(Config::parse(&fits, origin).is_ok());
    for (extra, expected) in [
        (
            format!("labels = {{ site = \"{long_value}x\" }}\n"),
            "big.toml:4:19: bad `site` in `labels` of [[target]] \"a\": label values are at most 1024 bytes long",
        ),
        (
            format!("labels = {{ {long_name}x = \"v\" }}\n"),
            "big.toml:4:12: ",
        ),
        (
            format!("client_id = \"{long_value}x\"\n"),
            "big.toml:4:13: bad `client_id` in [[target]] \"a\": must be at most 1024 bytes long (it is the client_id label of every series)",
        ),
    ] {
        let message = Config::parse(&target(&extra), origin)
            .unwrap_err()
            .to_string();
        assert!(message.starts_with(expected), "{message}");
        assert!(
            !message.contains(&long_value),
            "the value is not echoed: {message}"
        );
    }
    // A name whose derived client id (`mqtt-pulse-<name>`) would be too long.
    let name = "n".repeat(MAX_LABEL_VALUE_LENGTH);
    let message = Config::parse(
        &format!("[[target]]\nname = \"{name}\"\nurl = \"mqtt://h\"\n"),
        origin,
    )
    .unwrap_err()
    .to_string();
    assert!(message.starts_with("big.toml:2:8: "), "{message}");
    assert!(
        message.contains("the client id derived from it must be at most 1024 bytes long"),
        "{message}"
    );
}

mod reload {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("mqtt-pulse.toml")).unwrap()
    }

    const BASE: &str = r#"
[defaults]
labels = { env = "prod" }

[[target]]
name = "a"
url = "mqtt://a.example"
username = "probe"
password = "one"

[[target]]
name = "b"
url = "mqtt://b.example"

[[target]]
name = "c"
url = "mqtt://c.example"
"#;

    fn names(targets: &[&mqtt_pulse::config::TargetConfig]) -> Vec<String> {
        targets.iter().map(|t| t.name().to_owned()).collect()
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let (old, new) = (parse(BASE), parse(BASE));
        let changes = diff(&old, &new);
        assert_eq!(names(&changes.unchanged), ["a", "b", "c"]);
        assert!(changes.added.is_empty() && changes.removed.is_empty());
        assert!(changes.changed.is_empty());
    }

    #[test]
    fn moving_a_target_to_another_line_is_not_a_change() {
        let moved = BASE.replace("[defaults]", "# a comment\n\n[defaults]");
        let (old, new) = (parse(BASE), parse(&moved));
        assert_ne!(old.targets()[0].location(), new.targets()[0].location());
        assert_eq!(names(&diff(&old, &new).unchanged), ["a", "b", "c"]);
    }

    #[test]
    fn a_new_password_a_new_default_and_a_rename_are_seen() {
        let edited = BASE
            .replace("password = \"one\"", "password = \"two\"")
            .replace("env = \"prod\"", "env = \"staging\"")
            .replace("name = \"c\"", "name = \"d\"");
        let (old, new) = (parse(BASE), parse(&edited));
        let changes = diff(&old, &new);
        // `b` inherits the changed default label.
        assert_eq!(names(&changes.changed), ["a", "b"]);
        assert_eq!(names(&changes.added), ["d"]);
        assert_eq!(names(&changes.removed), ["c"]);
        assert!(changes.unchanged.is_empty());
    }

    #[test]
    fn writing_a_default_out_explicitly_is_not_a_change() {
        let explicit = BASE.replace(
            "name = \"b\"\n",
            "name = \"b\"\nkeep_alive = \"5s\"\nclient_id = \"mqtt-pulse-b\"\n",
        );
        let (old, new) = (parse(BASE), parse(&explicit));
        assert_eq!(names(&diff(&old, &new).unchanged), ["a", "b", "c"]);
    }
}

mod secrets {
    use super::*;

    /// Configs with the secret on or next to the line in error.
    fn broken_configs() -> Vec<String> {
        let target = "[[target]]\nname = \"a\"\nurl = \"mqtt://h\"\nusername = \"u\"\n";
        [
            format!("{target}password = {SECRET}\n"),
            format!("{target}password = \"{SECRET}\n"),
            format!("{target}password = '{SECRET}\n"),
            format!("{target}password = \"\"\"{SECRET}\n"),
            format!("{target}password = \"{SECRET}\" trailing\n"),
            format!("{target}password = \"{SECRET}\\q\"\n"),
            format!("{target}password = [\"{SECRET}\"]\n"),
            format!("{target}password = {{ value = \"{SECRET}\" }}\n"),
            format!("{target}password = \"{SECRET}\"\npassword = \"{SECRET}\"\n"),
            format!("{target}password = \"{SECRET}\"\npassword_file = \"missing\"\n"),
            format!("{target}password = \"{SECRET}\"\nkeep_alive = \"forever\"\n"),
            format!("{target}password = \"{SECRET}\"\npasword = \"{SECRET}\"\n"),
            format!("{target}password = \"{SECRET}\" = 1\n"),
            format!("{target}password = \"{SECRET}{}\"\n", "x".repeat(70_000)),
            format!("[[target]]\nname = \"a\"\nurl = \"mqtt://h\"\npassword = \"{SECRET}\"\n"),
            format!("[[target]]\nname = \"a\"\nurl = \"mqtt://u:{SECRET}@h\"\n"),
            format!("[[target]]\nname = \"a\"\nurl = \"mqtt://u:{SECRET}@h:99999\"\n"),
            format!("[[target]]\nname = \"a\"\nurl = \"http://u:{SECRET}@h\"\n"),
            format!("[defaults]\npassword = \"{SECRET}\"\n{target}"),
            format!("{target}\n[otlp]\nheaders = {{ authorization = \"{SECRET}\\n\" }}\n"),
            format!("{target}\n[otlp]\nheaders = {{ authorization = [\"{SECRET}\"] }}\n"),
        ]
        .into()
    }

    fn assert_hidden(text: &str, what: &str, input: &str) {
        assert!(
            !text.contains(SECRET) && !text.contains(SECRET_PART),
            "the secret leaked into {what}: {text}\n--- input:\n{input}"
        );
    }

    #[test]
    fn no_error_shows_the_password() {
        for text in broken_configs() {
            let error = Config::parse(&text, Path::new("secret.toml"))
                .expect_err(&format!("should not load:\n{text}"));
            assert_hidden(&error.to_string(), "an error", &text);
            assert_hidden(&format!("{error:?}"), "an error's Debug", &text);
            assert!(!error.to_string().contains('\n'), "not one line: {error}");
        }
    }

    #[test]
    fn an_integer_password_is_not_echoed_either() {
        let text = "[[target]]\nname = \"a\"\nurl = \"mqtt://h\"\nusername = \"u\"\npassword = 3141592653589\n";
        let error = Config::parse(text, Path::new("secret.toml")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "secret.toml:5:12: wrong type for `password` in [[target]] \"a\": expected a string, found an integer"
        );
    }

    #[test]
    fn a_loaded_inline_password_is_in_no_warning_and_no_debug_output() {
        let config = Config::load(&testdata("good-inline-password.toml")).unwrap();
        let input = "good-inline-password.toml";
        assert_eq!(config.warnings().len(), 1);
        for warning in config.warnings() {
            assert_hidden(warning, "a warning", input);
        }
        let target = &config.targets()[0];
        assert_hidden(&format!("{config:?}"), "the config's Debug", input);
        assert_hidden(&format!("{config:#?}"), "the config's pretty Debug", input);
        assert_hidden(&format!("{target:?}"), "the target's Debug", input);
        assert_hidden(
            &format!("{:?}", target.options()),
            "the options' Debug",
            input,
        );
        assert_hidden(
            &format!("{:?}", diff(&config, &config)),
            "a diff's Debug",
            input,
        );
    }
}

/// Where proptest writes the arbitrary files it loads.
fn scratch_file(bytes: &[u8]) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("config-proptest");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "{}-{}.toml",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The rules any outcome of loading must keep, whatever the input.
fn check_outcome(result: &Result<Config, ConfigError>, origin: &Path) {
    match result {
        Err(error) => {
            let message = error.to_string();
            assert!(!message.contains(['\n', '\r']), "not one line: {message:?}");
            let prefix = format!("{}:", origin.display());
            assert!(
                message.starts_with(&prefix),
                "does not name the file: {message}"
            );
            assert!(!message.contains(SECRET_PART), "secret in {message}");
            assert!(
                !format!("{error:?}").contains(SECRET_PART),
                "secret in {error:?}"
            );
        }
        Ok(config) => {
            let targets = config.targets();
            assert!(!targets.is_empty());
            let mut names: Vec<_> = targets.iter().map(|t| t.name()).collect();
            let mut ids: Vec<_> = targets
                .iter()
                .map(|t| t.options().client_id().as_str())
                .collect();
            names.sort_unstable();
            names.dedup();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(names.len(), targets.len(), "duplicate names loaded");
            assert_eq!(ids.len(), targets.len(), "duplicate client ids loaded");
            for target in targets {
                let options = target.options();
                let keep_alive = options.keep_alive();
                assert!(keep_alive >= secs(1) && keep_alive <= secs(65_535));
                assert_eq!(keep_alive.subsec_nanos(), 0);
                assert!(!options.connect_timeout().is_zero());
                assert!(options.backoff().max >= options.backoff().initial);
                // A label value is public by design, so it may hold anything.
                if !options.labels().values().any(|v| v.contains(SECRET_PART)) {
                    assert!(!format!("{target:?}").contains(SECRET_PART));
                }
            }
            for warning in config.warnings() {
                assert!(!warning.contains(['\n', '\r']));
                assert!(!warning.contains(SECRET_PART), "secret in {warning}");
            }
        }
    }
}

/// Lines a config file could have: headers, keys (right, misspelt, misplaced)
/// with values (right, wrong type, out of range), the secret in many shapes,
/// and garbage.
fn toml_ish_line() -> impl Strategy<Value = String> {
    let headers = prop::sample::select(vec![
        "[defaults]",
        "[[target]]",
        "[[target]]",
        "[[target]]",
        "[target.tls]",
        "[target.labels]",
        "[target.backoff]",
        "[defaults.tls]",
        "[defaults.labels]",
        "[otlp]",
        "[otlp.headers]",
        "[[targets]]",
        "[target]",
        "[[defaults]]",
        "[defaults",
        "]]",
    ]);
    let keys = prop::sample::select(vec![
        "name",
        "name",
        "url",
        "url",
        "client_id",
        "username",
        "password_file",
        "keep_alive",
        "connect_timeout",
        "ping_timeout",
        "backoff",
        "backoff.max",
        "clean_session",
        "labels",
        "labels.site",
        "tls",
        "tls.ca_file",
        "ca_file",
        "cert_file",
        "key_file",
        "insecure_skip_verify",
        "initial",
        "max",
        "endpoint",
        "protocol",
        "interval",
        "timeout",
        "headers",
        "site",
        "authorization",
        "keep_alvie",
        "\"quoted key\"",
        "target",
    ]);
    let values = prop::sample::select(vec![
        "\"plant-a\"",
        "\"plant-b\"",
        "\"mqtt-pulse-plant-a\"",
        "\"\"",
        "\"mqtt://127.0.0.1:1883\"",
        "\"mqtts://broker.example\"",
        "\"ws://broker.example/mqtt\"",
        "\"wss://broker.example\"",
        "\"http://127.0.0.1:4317\"",
        "\"mqtt://\"",
        "\"mqtt:///x\"",
        "\"5s\"",
        "\"250ms\"",
        "\"0s\"",
        "\"1.5s\"",
        "\"70000s\"",
        "\"5x\"",
        "\"99999999999999999999999s\"",
        "5",
        "-1",
        "1.5",
        "true",
        "false",
        "1979-05-27T07:32:00Z",
        "[]",
        "[1, \"a\"]",
        "{ initial = \"1s\", max = \"2s\" }",
        "{ max = \"10ms\" }",
        "{ initial = \"1h\" }",
        "{ site = \"north\" }",
        "{ __x = \"y\" }",
        "{ ca_file = \"pki/ca.pem\" }",
        "{ cert_file = \"pki/client.pem\", key_file = \"pki/client.key\" }",
        "\"pki/ca.pem\"",
        "\"pki/client.pem\"",
        "\"pki/client.key\"",
        "\"secrets/password\"",
        "\"missing.pem\"",
        "\"grpc\"",
        "\"http/protobuf\"",
        "{ authorization = \"Bearer x\" }",
        "\"\\u0001\"",
        "'literal'",
        "\"\"\"multi\nline\"\"\"",
    ]);
    let secret_lines = prop::sample::select(vec![
        "password = \"SECRET\"",
        "password = SECRET",
        "password = 'SECRET",
        "password = \"SECRET",
        "password = [\"SECRET\"]",
        "password = { v = \"SECRET\" }",
        "password = \"\"\"SECRET",
        "password = \"SECRET\" junk",
        "url = \"mqtt://u:SECRET@h\"",
    ])
    .prop_map(|line| line.replace("SECRET", SECRET));
    prop_oneof![
        3 => headers.prop_map(String::from),
        8 => (keys, values).prop_map(|(key, value)| format!("{key} = {value}")),
        2 => secret_lines,
        1 => "[ -~\t]{0,20}",
        1 => ("[a-z_]{1,12}", "[ -~]{0,12}").prop_map(|(key, value)| format!("{key} = {value}")),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let path = scratch_file(&bytes);
        let result = Config::load(&path);
        check_outcome(&result, &path);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        let origin = testdata("fuzz.toml");
        check_outcome(&Config::parse(&text, &origin), &origin);
    }
}

/// `key = value`, the value usually from `good`, sometimes from `bad`.
fn entry(key: &'static str, good: &[&'static str], bad: &[&'static str]) -> BoxedStrategy<String> {
    let good = prop::sample::select(good.to_vec());
    let value = if bad.is_empty() {
        good.boxed()
    } else {
        prop_oneof![8 => good, 1 => prop::sample::select(bad.to_vec())].boxed()
    };
    value
        .prop_map(move |value| format!("{key} = {value}"))
        .boxed()
}

/// `entry` present with probability `p`.
fn maybe(
    p: f64,
    key: &'static str,
    good: &[&'static str],
    bad: &[&'static str],
) -> BoxedStrategy<Option<String>> {
    prop::option::weighted(p, entry(key, good, bad)).boxed()
}

const DURATIONS: (&[&str], &[&str]) = (
    &["\"5s\"", "\"250ms\"", "\"1m 30s\""],
    &["\"0s\"", "\"5x\"", "5"],
);
const KEEP_ALIVES: (&[&str], &[&str]) = (
    &["\"5s\"", "\"1s\"", "\"65535s\""],
    &["\"1500ms\"", "\"70000s\"", "\"0s\""],
);
const BACKOFFS: (&[&str], &[&str]) = (
    &[
        "{ initial = \"1s\", max = \"2s\" }",
        "{ max = \"1m\" }",
        "{}",
    ],
    &[
        "{ max = \"10ms\" }",
        "{ initial = \"1h\" }",
        "{ initail = \"1s\" }",
    ],
);
const LABELS: (&[&str], &[&str]) = (
    &[
        "{ site = \"north\" }",
        "{ env = \"prod\", site = \"south\" }",
    ],
    &["{ __x = \"y\" }", "{ broker = \"b\" }", "{ floor = 3 }"],
);
const BOOLS: (&[&str], &[&str]) = (&["true", "false"], &["\"yes\""]);
const FILES: (&[&str], &[&str]) = (
    &["\"pki/ca.pem\"", "\"pki/client.pem\"", "\"pki/client.key\""],
    &["\"missing.pem\"", "\"pki\""],
);

/// The keys `[defaults]` and `[[target]]` share, each present or not.
fn layer_lines() -> BoxedStrategy<Vec<String>> {
    (
        maybe(0.3, "keep_alive", KEEP_ALIVES.0, KEEP_ALIVES.1),
        maybe(0.2, "connect_timeout", DURATIONS.0, DURATIONS.1),
        maybe(0.2, "ping_timeout", DURATIONS.0, DURATIONS.1),
        maybe(0.2, "backoff", BACKOFFS.0, BACKOFFS.1),
        maybe(0.2, "clean_session", BOOLS.0, BOOLS.1),
        maybe(0.3, "labels", LABELS.0, LABELS.1),
    )
        .prop_map(|(a, b, c, d, e, f)| [a, b, c, d, e, f].into_iter().flatten().collect())
        .boxed()
}

fn tls_lines(header: &'static str) -> BoxedStrategy<Vec<String>> {
    let pair = prop::option::weighted(
        0.4,
        (
            entry("cert_file", &["\"pki/client.pem\""], FILES.1),
            entry("key_file", &["\"pki/client.key\""], FILES.1),
        ),
    );
    (
        maybe(0.5, "ca_file", FILES.0, FILES.1),
        pair,
        maybe(0.1, "cert_file", FILES.0, FILES.1),
        maybe(0.3, "insecure_skip_verify", BOOLS.0, BOOLS.1),
    )
        .prop_map(move |(ca, pair, lone_cert, skip)| {
            let mut lines = vec![header.to_owned()];
            lines.extend(ca);
            match (pair, lone_cert) {
                (Some((cert, key)), _) => lines.extend([cert, key]),
                (None, cert) => lines.extend(cert),
            }
            lines.extend(skip);
            lines
        })
        .boxed()
}

fn target_lines() -> BoxedStrategy<Vec<String>> {
    let urls = &[
        "\"mqtt://127.0.0.1:1883\"",
        "\"mqtts://broker.example\"",
        "\"ws://broker.example/mqtt\"",
        "\"wss://broker.example\"",
    ];
    let bad_urls = &[
        "\"http://broker.example\"",
        "\"mqtt://\"",
        "\"broker.example:1883\"",
    ];
    let names = &["\"plant-a\"", "\"plant-b\"", "\"plant-c\"", "\"plant-d\""];
    let secret = format!("\"{SECRET}\"");
    (
        entry("name", names, &["\"\"", "1"]),
        entry("url", urls, bad_urls),
        maybe(
            0.2,
            "client_id",
            &["\"probe\"", "\"mqtt-pulse-plant-a\""],
            &["\"\""],
        ),
        maybe(0.5, "username", &["\"probe\"", "\"\""], &[]),
        prop::option::weighted(0.3, Just(format!("password = {secret}"))),
        maybe(
            0.2,
            "password_file",
            &["\"secrets/password\""],
            &["\"missing\""],
        ),
        layer_lines(),
        prop::option::weighted(0.3, tls_lines("[target.tls]")),
    )
        .prop_map(
            |(name, url, client_id, username, password, password_file, layer, tls)| {
                let mut lines = vec!["[[target]]".to_owned(), name, url];
                lines.extend(
                    [client_id, username, password, password_file]
                        .into_iter()
                        .flatten(),
                );
                lines.extend(layer);
                lines.extend(tls.into_iter().flatten());
                lines
            },
        )
        .boxed()
}

fn otlp_lines() -> BoxedStrategy<Vec<String>> {
    (
        maybe(
            0.5,
            "endpoint",
            &["\"http://127.0.0.1:4317\""],
            &["\"grpc://x\"", "\"https://\""],
        ),
        maybe(
            0.5,
            "protocol",
            &["\"grpc\"", "\"http/protobuf\""],
            &["\"http/json\""],
        ),
        maybe(0.3, "interval", DURATIONS.0, DURATIONS.1),
        maybe(0.3, "timeout", DURATIONS.0, DURATIONS.1),
        maybe(
            0.3,
            "headers",
            &["{ authorization = \"Bearer x\" }"],
            &["{ \"a b\" = \"c\" }", "{ a = 1 }"],
        ),
    )
        .prop_map(|(a, b, c, d, e)| {
            std::iter::once("[otlp]".to_owned())
                .chain([a, b, c, d, e].into_iter().flatten())
                .collect()
        })
        .boxed()
}

/// A config that is mostly well formed: optional `[defaults]`, one to four
/// targets, optional `[otlp]`, each key present or not with a value that is
/// usually right; then, sometimes, a line replaced, inserted or deleted.
fn toml_ish_document() -> impl Strategy<Value = String> {
    let defaults = (
        layer_lines(),
        prop::option::weighted(0.3, tls_lines("[defaults.tls]")),
    )
        .prop_map(|(layer, tls)| {
            let mut lines = vec!["[defaults]".to_owned()];
            lines.extend(layer);
            lines.extend(tls.into_iter().flatten());
            lines
        });
    let edit = (any::<prop::sample::Index>(), 0..3u8, toml_ish_line());
    (
        prop::option::weighted(0.5, defaults),
        prop::collection::vec(target_lines(), 1..4),
        prop::option::weighted(0.3, otlp_lines()),
        prop::option::weighted(0.4, edit),
    )
        .prop_map(|(defaults, targets, otlp, edit)| {
            let mut lines: Vec<String> = defaults.into_iter().flatten().collect();
            lines.extend(targets.into_iter().flatten());
            lines.extend(otlp.into_iter().flatten());
            if let Some((at, kind, line)) = edit {
                let index = at.index(lines.len());
                match kind {
                    0 => lines[index] = line,
                    1 => {
                        lines.remove(index);
                    }
                    _ => lines.insert(index, line),
                }
            }
            lines.join("\n")
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn toml_ish_text_never_panics_and_never_leaks(text in toml_ish_document()) {
        let origin = testdata("fuzz.toml");
        check_outcome(&Config::parse(&text, &origin), &origin);
    }

    #[test]
    fn lines_of_keys_values_and_garbage_never_panic(lines in prop::collection::vec(toml_ish_line(), 0..24)) {
        let text = lines.join("\n");
        let origin = testdata("fuzz.toml");
        check_outcome(&Config::parse(&text, &origin), &origin);
    }
}

#[test]
fn a_file_name_with_a_newline_still_makes_a_one_line_error() {
    // Found by the toml-ish proptest: `ca_file = "multi\nline"`.
    let dir = std::env::temp_dir().join(format!("mqtt-pulse-config-nl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("newline.toml");
    std::fs::write(
        &path,
        "[[target]]\nname = \"a\"\nurl = \"mqtts://h\"\n[target.tls]\nca_file = \"multi\\nline\"\n",
    )
    .unwrap();
    let message = Config::load(&path).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!message.contains('\n'), "{message:?}");
    assert!(message.contains("multi\\nline"), "{message:?}");
}
