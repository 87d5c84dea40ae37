//! Good files: defaults, merged layers and the values they give each
//! target, warnings, the file-less default, and the shipped example.

use std::collections::BTreeMap;
use std::path::Path;

use mqtt_pulse::config::{Config, ConfigError, Location};
use mqtt_pulse::connection::{
    Backoff, ClientCertificate, DEFAULT_CONNECT_CONCURRENCY, Protocol, TlsOptions,
};
use mqtt_pulse::exporter::otlp::OtlpProtocol;

use crate::{ms, secs, testdata};

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
    assert_eq!(options.connect_concurrency(), DEFAULT_CONNECT_CONCURRENCY);
    assert!(options.clean_session());
    assert!(options.labels().is_empty());
    assert_eq!(options.tls(), &TlsOptions::default());
}

#[test]
fn connect_concurrency_in_defaults_paces_every_target() {
    for (written, limit) in [("16", 16), ("0", 0), ("0x40", 64)] {
        let text = format!(
            "[defaults]\nconnect_concurrency = {written}\n\n\
             [[target]]\nname = \"a\"\nurl = \"mqtt://one.example\"\n\n\
             [[target]]\nname = \"b\"\nurl = \"mqtt://two.example\"\n"
        );
        let config = Config::parse(&text, Path::new("pacing.toml")).unwrap();
        for target in config.targets() {
            assert_eq!(target.options().connect_concurrency(), limit, "{written}");
        }
    }
}

#[test]
fn a_client_id_template_in_defaults_names_every_target_that_sets_none() {
    let text = "[defaults]\nclient_id = \"mqtt-pulse-{hostname}-{name}\"\n\n\
                [[target]]\nname = \"a\"\nurl = \"mqtt://one.example\"\n\n\
                [[target]]\nname = \"b\"\nurl = \"mqtt://one.example\"\nclient_id = \"own-{name}\"\n";
    let config = Config::parse(text, Path::new("ids.toml")).unwrap();
    let (a, b) = (config.target("a").unwrap(), config.target("b").unwrap());
    let id = a.options().client_id().as_str();
    assert!(id.starts_with("mqtt-pulse-") && id.ends_with("-a"), "{id}");
    assert_ne!(id, "mqtt-pulse--a");
    assert!(a.client_id_per_host());
    assert_eq!(b.options().client_id().as_str(), "own-b");
    assert!(!b.client_id_per_host());
    // Without a template or {hostname}, an id is the same on every host.
    let plain = Config::parse(
        "[[target]]\nname = \"c\"\nurl = \"mqtt://h\"\n",
        Path::new("c.toml"),
    );
    assert!(!plain.unwrap().targets()[0].client_id_per_host());
}

#[test]
fn a_probe_in_defaults_probes_every_target_and_a_target_overrides_it_key_by_key() {
    let text = "[defaults]\nkeep_alive = \"3s\"\n[defaults.probe]\nqos = 2\ninterval = \"1s\"\n\n\
                [[target]]\nname = \"a\"\nurl = \"mqtt://one.example\"\n\n\
                [[target]]\nname = \"b\"\nurl = \"mqtt://two.example\"\n\
                [target.probe]\ntopic = \"health/{client_id}\"\ntimeout = \"4s\"\n\n\
                [[target]]\nname = \"c\"\nurl = \"mqtt://three.example\"\n\
                [target.probe]\nenabled = false\n";
    let config = Config::parse(text, Path::new("probe.toml")).unwrap();
    let targets: Vec<_> = config.targets().iter().collect();
    let keep_alive = secs(3);
    let a = targets[0].options().probe().expect("a probes");
    assert_eq!(a.topic_for("mqtt-pulse-a"), "mqtt-pulse/probe/mqtt-pulse-a");
    assert_eq!(a.qos(), rumqttc::QoS::ExactlyOnce);
    assert_eq!(
        (a.interval(keep_alive), a.timeout(keep_alive)),
        (secs(1), secs(1))
    );
    let b = targets[1].options().probe().expect("b probes");
    assert_eq!(b.topic_for("mqtt-pulse-b"), "health/mqtt-pulse-b");
    assert_eq!(b.qos(), rumqttc::QoS::ExactlyOnce, "from [defaults.probe]");
    assert_eq!(
        (b.interval(keep_alive), b.timeout(keep_alive)),
        (secs(1), secs(4))
    );
    assert!(targets[2].options().probe().is_none(), "enabled = false");

    let without = "[[target]]\nname = \"a\"\nurl = \"mqtt://one.example\"\n";
    let config = Config::parse(without, Path::new("plain.toml")).unwrap();
    assert!(config.targets()[0].options().probe().is_none(), "opt-in");
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
            client_certificate: Some(ClientCertificate {
                cert_file: pki("client.pem"),
                key_file: pki("client.key"),
            }),
            insecure_skip_verify: true,
        }
    );

    let websocket = config.target("websocket").unwrap().options();
    assert_eq!(websocket.broker(), "broker.example:443");
    assert_eq!(websocket.tls().ca_file, Some(pki("ca.pem")));
    assert!(websocket.tls().client_certificate.is_some());
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
    assert_eq!(config.paths()[0].name(), "plant-a->lab");
    // client_id = "probe-{hostname}-{name}", expanded.
    let plant_a = config.target("plant-a").unwrap().options().client_id();
    assert!(plant_a.as_str().starts_with("probe-"), "{plant_a}");
    assert!(plant_a.as_str().ends_with("-plant-a"), "{plant_a}");
    assert!(!plant_a.as_str().contains('{'), "{plant_a}");

    let text = std::fs::read_to_string(path).unwrap();
    for key in [
        "[defaults]",
        "[defaults.tls]",
        "[[target]]",
        "[target.tls]",
        "[otlp]",
        "[[path]]",
        "from =",
        "to =",
        "topic =",
        "qos =",
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
        "connect_concurrency =",
        "rtt_buckets =",
        "rtt_native_schema =",
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
fn protocol_defaults_to_311_and_a_target_overrides_defaults() {
    let text = "[defaults]\nprotocol = \"5\"\n\n[[target]]\nname = \"five\"\nurl = \"mqtt://h\"\n\n\
                [[target]]\nname = \"old\"\nurl = \"mqtt://h\"\nprotocol = \"3.1.1\"\n";
    let config = Config::parse(text, Path::new("x.toml")).unwrap();
    let protocol = |name| config.target(name).unwrap().options().protocol();
    assert_eq!(protocol("five"), Protocol::V5);
    assert_eq!(protocol("old"), Protocol::V311);
    let plain = Config::parse(
        "[[target]]\nname = \"a\"\nurl = \"mqtt://h\"\n",
        Path::new("x.toml"),
    )
    .unwrap();
    assert_eq!(plain.targets()[0].options().protocol(), Protocol::V311);
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
fn a_path_gets_its_defaults_from_its_targets_and_reads_every_key() {
    let text = r#"
[defaults]
keep_alive = "3s"

[[target]]
name = "north"
url = "mqtt://north.example"

[[target]]
name = "south"
url = "mqtt://south.example"
keep_alive = "7s"

[[path]]
from = "north"
to = "south"

[[path]]
name = "back"
from = "south"
to = "north"
topic = "bridge/{from}/{to}"
interval = "250ms"
qos = 2
timeout = "2s"
"#;
    let config = Config::parse(text, Path::new("mqtt-pulse.toml")).unwrap();
    let names: Vec<_> = config.paths().iter().map(|p| p.name()).collect();
    assert_eq!(names, ["north->south", "back"]);

    let there = config.path("north->south").unwrap();
    assert_eq!((there.from(), there.to()), ("north", "south"));
    let options = there.options();
    assert_eq!(options.name(), "north->south");
    assert_eq!(options.qos(), mqtt_pulse::rumqttc::QoS::AtLeastOnce);
    // The interval and timeout follow the keep-alive of `from`.
    assert_eq!(options.interval(secs(3)), secs(3));
    assert_eq!(options.timeout(secs(3)), secs(3));
    assert_eq!(
        options.topic_for("mqtt-pulse-north", "mqtt-pulse-south"),
        "mqtt-pulse/path/mqtt-pulse-north/mqtt-pulse-south"
    );

    let back = config.path("back").unwrap().options();
    assert_eq!(back.topic_for("s", "n"), "bridge/s/n");
    assert_eq!(back.interval(secs(7)), ms(250));
    assert_eq!(back.timeout(secs(7)), secs(2));
    assert_eq!(back.qos(), mqtt_pulse::rumqttc::QoS::ExactlyOnce);
    assert_eq!(config.path("north->south").unwrap().location().line, 14);
}

#[test]
fn a_file_without_paths_has_none() {
    assert!(Config::default_local().paths().is_empty());
}

#[test]
fn rtt_buckets_in_defaults_are_read_as_seconds_integers_too() {
    let config = Config::parse(
        "[defaults]\nrtt_buckets = [0.000_5, 0.002, 1, 5e0]\n\n\
         [[target]]\nname = \"a\"\nurl = \"mqtt://127.0.0.1:1883\"\n",
        Path::new("buckets.toml"),
    )
    .unwrap();
    assert_eq!(config.rtt_buckets(), Some(&[0.0005, 0.002, 1.0, 5.0][..]));
    assert_eq!(Config::default_local().rtt_buckets(), None);
}

#[test]
fn rtt_native_schema_in_defaults_is_read_from_minus_four_to_three() {
    for schema in [-4, 0, 3] {
        let config = Config::parse(
            &format!(
                "[defaults]\nrtt_native_schema = {schema}\n\n\
                 [[target]]\nname = \"a\"\nurl = \"mqtt://127.0.0.1:1883\"\n"
            ),
            Path::new("schema.toml"),
        )
        .unwrap();
        assert_eq!(config.rtt_native_schema(), Some(schema));
    }
    assert_eq!(Config::default_local().rtt_native_schema(), None);
}
