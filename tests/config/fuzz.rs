//! Arbitrary input (bytes, text, lines and mostly well-formed documents)
//! never panics, and every outcome keeps the rules: a one-line error naming
//! the file, no secret, sane loaded values.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use mqtt_pulse::config::{Config, ConfigError};
use proptest::prelude::*;

use crate::{SECRET, SECRET_PART, secs, testdata};

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
