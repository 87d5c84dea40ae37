//! Bad files: one small file per rule in `tests/testdata/bad-*.toml` with
//! the exact line a user sees (the table, and a check that every bad file is
//! in it), unreadable files, the problem and location behind a message, and
//! the bounds on targets and label lengths.

use std::path::Path;

use mqtt_pulse::config::{Config, ConfigError, Location, Problem};

use crate::testdata;

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
        "bad-probe-qos.toml",
        "tests/testdata/bad-probe-qos.toml:5:7: bad `qos` in `probe` of [[target]] \"plant-a\": must be a whole number from 0 to 2",
    ),
    (
        "bad-probe-topic.toml",
        "tests/testdata/bad-probe-topic.toml:2:9: bad `topic` in `probe` of [defaults]: must not contain the wildcards `+` or `#`: the probe publishes to it",
    ),
    (
        "bad-probe-timeout.toml",
        "tests/testdata/bad-probe-timeout.toml:6:11: bad `timeout` in `probe` of [[target]] \"plant-a\": must be at most 1000 intervals (10s)",
    ),
    (
        "bad-probe-unknown-key.toml",
        "tests/testdata/bad-probe-unknown-key.toml:5:1: unknown key `intervall` in `probe` of [[target]] \"plant-a\"; did you mean `interval`?",
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
        "bad-only-a-default.toml",
        "tests/testdata/bad-only-a-default.toml:4:1: `connect_concurrency` cannot be set in [[target]] \"plant-a\"; set it in [defaults]: it paces all the targets of a broker together",
    ),
    (
        "bad-connect-concurrency.toml",
        "tests/testdata/bad-connect-concurrency.toml:2:23: bad `connect_concurrency` in [defaults]: must be a whole number from 0 to 65535",
    ),
    (
        "bad-rtt-buckets-order.toml",
        "tests/testdata/bad-rtt-buckets-order.toml:2:29: bad `rtt_buckets` in [defaults]: the bounds are not strictly increasing: give 1 to 64 finite, positive upper bounds in seconds, strictly increasing (+Inf is always added)",
    ),
    (
        "bad-rtt-buckets-empty.toml",
        "tests/testdata/bad-rtt-buckets-empty.toml:2:15: bad `rtt_buckets` in [defaults]: no bounds given: give 1 to 64 finite, positive upper bounds in seconds, strictly increasing (+Inf is always added)",
    ),
    (
        "bad-rtt-buckets-negative.toml",
        "tests/testdata/bad-rtt-buckets-negative.toml:2:23: bad `rtt_buckets` in [defaults]: a bound is negative: give 1 to 64 finite, positive upper bounds in seconds, strictly increasing (+Inf is always added)",
    ),
    (
        "bad-rtt-buckets-infinite.toml",
        "tests/testdata/bad-rtt-buckets-infinite.toml:2:23: bad `rtt_buckets` in [defaults]: a bound is NaN or infinite: give 1 to 64 finite, positive upper bounds in seconds, strictly increasing (+Inf is always added)",
    ),
    (
        "bad-rtt-buckets-string.toml",
        "tests/testdata/bad-rtt-buckets-string.toml:2:23: bad `rtt_buckets` in [defaults]: must be a list of seconds such as [0.001, 0.01, 0.1]: every bound a number",
    ),
    (
        "bad-rtt-buckets-type.toml",
        "tests/testdata/bad-rtt-buckets-type.toml:2:15: wrong type for `rtt_buckets` in [defaults]: expected a list of seconds such as [0.001, 0.01, 0.1], found a string",
    ),
    (
        "bad-rtt-buckets-in-target.toml",
        "tests/testdata/bad-rtt-buckets-in-target.toml:4:1: `rtt_buckets` cannot be set in [[target]] \"plant-a\"; set it in [defaults]: every target's histograms share one bucket layout",
    ),
    (
        "bad-rtt-native-schema.toml",
        "tests/testdata/bad-rtt-native-schema.toml:2:21: bad `rtt_native_schema` in [defaults]: finer than the schema round trips are counted at (3): must be an integer from -4 (coarsest) to 3 (finest); a bucket of schema s spans a factor of 2^(2^-s) (0: 2, 1: 1.41, 2: 1.19, 3: 1.09)",
    ),
    (
        "bad-rtt-native-schema-type.toml",
        "tests/testdata/bad-rtt-native-schema-type.toml:2:21: wrong type for `rtt_native_schema` in [defaults]: expected an integer from -4 (coarsest) to 3 (finest), found a float",
    ),
    (
        "bad-rtt-native-schema-in-target.toml",
        "tests/testdata/bad-rtt-native-schema-in-target.toml:4:1: `rtt_native_schema` cannot be set in [[target]] \"plant-a\"; set it in [defaults]: every target's histograms share one bucket layout",
    ),
    (
        "bad-rtt-buckets-too-many.toml",
        "tests/testdata/bad-rtt-buckets-too-many.toml:2:458: bad `rtt_buckets` in [defaults]: more than 64 bounds: give 1 to 64 finite, positive upper bounds in seconds, strictly increasing (+Inf is always added)",
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
        "bad-protocol.toml",
        "tests/testdata/bad-protocol.toml:7:12: bad `protocol` in [[target]] \"plant-a\": must be \"3.1.1\" or \"5\", not \"5.0\"",
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
        "bad-client-id-placeholder.toml",
        "tests/testdata/bad-client-id-placeholder.toml:4:13: bad `client_id` in [[target]] \"plant-a\": has an unknown placeholder `{host}`; use {name} or {hostname} (write {{ and }} for braces)",
    ),
    (
        "bad-defaults-client-id-without-name.toml",
        "tests/testdata/bad-defaults-client-id-without-name.toml:2:13: bad `client_id` in [defaults]: must hold {name}: it is the client id of every target that sets none, and two targets cannot share one",
    ),
    (
        "bad-duplicate-client-id-from-template.toml",
        "tests/testdata/bad-duplicate-client-id-from-template.toml:10:8: duplicate client id \"probe-b\" in [[target]] \"b\" (derived from its name): [[target]] \"a\" at line 7 uses it too",
    ),
    (
        "bad-defaults-client-id-placeholder.toml",
        "tests/testdata/bad-defaults-client-id-placeholder.toml:2:13: bad `client_id` in [defaults]: has an unknown placeholder `{region}`; use {name} or {hostname} (write {{ and }} for braces)",
    ),
    (
        "bad-ca-file-device.toml",
        "tests/testdata/bad-ca-file-device.toml:5:11: cannot read `ca_file` in `tls` of [[target]] \"plant-a\": /dev/zero: is a character device, not a regular file",
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
        "tests/testdata/bad-label-reserved.toml:2:12: bad label name `broker` in `labels` of [defaults]: mqtt-pulse sets this label itself (client_id, broker, status, reason, type and outcome are taken)",
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
    (
        "bad-path-duplicate.toml",
        "tests/testdata/bad-path-duplicate.toml:13:1: duplicate path name \"plant-a->plant-b\": line 9 already uses it; give one of them a `name`",
    ),
    (
        "bad-path-missing-to.toml",
        "tests/testdata/bad-path-missing-to.toml:9:1: missing `to` in [[path]] #1",
    ),
    (
        "bad-path-qos.toml",
        "tests/testdata/bad-path-qos.toml:12:7: bad `qos` in [[path]] \"plant-a->plant-b\": must be 0, 1 or 2",
    ),
    (
        "bad-path-same-target.toml",
        "tests/testdata/bad-path-same-target.toml:11:6: bad `to` in [[path]] \"plant-a->plant-a\": must name another target than `from`; a target's own round trip is its [target.probe]",
    ),
    (
        "bad-path-timeout.toml",
        "tests/testdata/bad-path-timeout.toml:13:11: bad `timeout` in [[path]] \"plant-a->plant-b\": must be at most 1000 intervals (1000s)",
    ),
    (
        "bad-path-topic-wildcard.toml",
        "tests/testdata/bad-path-topic-wildcard.toml:12:9: bad `topic` in [[path]] \"plant-a->plant-b\": must not contain the wildcards `+` or `#`: the path publishes to it",
    ),
    (
        "bad-path-unknown-key.toml",
        "tests/testdata/bad-path-unknown-key.toml:12:1: unknown key `intervall` in [[path]] \"plant-a->plant-b\"; did you mean `interval`?",
    ),
    (
        "bad-path-unknown-target.toml",
        "tests/testdata/bad-path-unknown-target.toml:11:6: bad `to` in [[path]] \"plant-a->plant-c\": no [[target]] is named \"plant-c\"",
    ),
    (
        "bad-path-client-id-wildcard.toml",
        "tests/testdata/bad-path-client-id-wildcard.toml:10:1: bad `topic` in [[path]] \"plant-a->plant-b\": expands to \"mqtt-pulse/path/plant#a/mqtt-pulse-plant-b\", which must not contain the wildcards `+` or `#`: the path publishes to it",
    ),
    (
        "bad-probe-client-id-wildcard.toml",
        "tests/testdata/bad-probe-client-id-wildcard.toml:6:9: bad `topic` in `probe` of [[target]] \"plant-a\": expands to \"health/plant+a\", which must not contain the wildcards `+` or `#`: the probe publishes to it",
    ),
    (
        "bad-probe-default-topic-client-id.toml",
        "tests/testdata/bad-probe-default-topic-client-id.toml:4:1: bad `topic` in `probe` of [[target]] \"plant-a\": expands to \"mqtt-pulse/probe/plant+a\", which must not contain the wildcards `+` or `#`: the probe publishes to it",
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
fn the_number_of_targets_and_the_length_of_labels_are_bounded_with_a_clear_error() {
    // A file shared by shards may hold more than one process watches
    // (MAX_TARGETS, checked by the daemon on its share: tests/shards.rs).
    use mqtt_pulse::config::MAX_FILE_TARGETS;
    use mqtt_pulse::connection::{MAX_LABEL_NAME_LENGTH, MAX_LABEL_VALUE_LENGTH};
    let origin = Path::new("big.toml");
    let targets = |count: usize| {
        (0..count)
            .map(|i| format!("[[target]]\nname = \"t{i}\"\nurl = \"mqtt://h\"\n"))
            .collect::<String>()
    };
    assert_eq!(
        Config::parse(&targets(MAX_FILE_TARGETS), origin)
            .unwrap()
            .targets()
            .len(),
        MAX_FILE_TARGETS
    );
    let error = Config::parse(&targets(MAX_FILE_TARGETS + 1), origin).unwrap_err();
    // Pointing at the first target too many: three lines per target.
    assert_eq!(
        error.to_string(),
        format!(
            "big.toml:{}:1: {} targets; a config file has at most {MAX_FILE_TARGETS}: \
             split them over several files",
            3 * MAX_FILE_TARGETS + 1,
            MAX_FILE_TARGETS + 1
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
