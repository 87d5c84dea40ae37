//! `docker-compose.yml`: valid for `docker-compose`, and every service gets
//! files that its own tool checks.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::daemon;
use crate::{JOB, read, repo, succeed, yaml, yaml_file};

/// `docker-compose` in the repository, with none of the caller's variables
/// that the compose file reads.
pub(crate) fn docker_compose(args: &[&str]) -> Command {
    let mut command = Command::new("docker-compose");
    command
        .current_dir(repo(""))
        .args(["-f", "docker-compose.yml"])
        .args(args);
    for name in [
        "MQTT_PORT",
        "MQTT_PULSE_PORT",
        "PROMETHEUS_PORT",
        "GRAFANA_PORT",
        "GRAFANA_ADMIN_PASSWORD",
        "OTLP_GRPC_PORT",
        "MQTT_PULSE_REVISION",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "COMPOSE_PROFILES",
        "COMPOSE_FILE",
    ] {
        command.env_remove(name);
    }
    command
}

/// A service's bind mounts as (host path, container path).
pub(crate) fn binds(service: &Value) -> Vec<(PathBuf, String)> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|volume| {
            let (source, target) = match volume {
                Value::String(spec) => {
                    let mut parts = spec.split(':');
                    (parts.next()?.to_owned(), parts.next()?.to_owned())
                }
                _ => (
                    volume["source"].as_str()?.to_owned(),
                    volume["target"].as_str()?.to_owned(),
                ),
            };
            source
                .starts_with('/')
                .then(|| (PathBuf::from(source), target))
        })
        .collect()
}

/// The host path behind `container_path` in a service, through its bind mounts.
pub(crate) fn host_path(service: &Value, container_path: &str) -> PathBuf {
    binds(service)
        .into_iter()
        .filter_map(|(source, target)| {
            let rest = container_path.strip_prefix(&target)?;
            match rest.strip_prefix('/') {
                _ if rest.is_empty() => Some(source),
                Some(inner) => Some(source.join(inner)),
                None => None,
            }
        })
        .next()
        .unwrap_or_else(|| panic!("{container_path} is not bind-mounted in {service}"))
}

/// The value of `--flag=value` in a service's command.
pub(crate) fn flag(service: &Value, flag: &str) -> String {
    service["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|arg| arg.strip_prefix(&format!("{flag}=")))
        .unwrap_or_else(|| panic!("no {flag}= in {}", service["command"]))
        .to_owned()
}

#[test]
fn compose_file_is_valid_and_every_service_gets_files_that_check() {
    succeed(&mut docker_compose(&["config", "-q"]), "docker-compose");
    succeed(
        &mut docker_compose(&["--profile", "otel", "config", "-q"]),
        "docker-compose",
    );
    let resolved = succeed(
        &mut docker_compose(&["--profile", "otel", "config"]),
        "docker-compose",
    );
    let compose = yaml(&resolved, "docker-compose config");
    let services = &compose["services"];
    let names: BTreeSet<&str> = services
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "grafana",
            "mosquitto",
            "mqtt-pulse",
            "otel-collector",
            "prometheus"
        ])
    );
    for (name, service) in services.as_object().unwrap() {
        let profiles = service["profiles"].as_array().cloned().unwrap_or_default();
        let expected = if name == "otel-collector" {
            vec![json!("otel")]
        } else {
            vec![]
        };
        assert_eq!(profiles, expected, "{name}: profiles");
        for (source, _) in binds(service) {
            assert!(
                source.exists(),
                "{name} mounts {}, which does not exist",
                source.display()
            );
        }
    }

    // mqtt-pulse: built from this Dockerfile; its config passes --config.check and
    // watches the compose broker.
    let pulse = &services["mqtt-pulse"];
    assert_eq!(
        PathBuf::from(pulse["build"]["context"].as_str().unwrap())
            .canonicalize()
            .unwrap(),
        repo("").canonicalize().unwrap()
    );
    let config = host_path(pulse, &flag(pulse, "--config.file"));
    let checked = succeed(
        daemon::command()
            .arg("--config.check")
            .arg(format!("--config.file={}", config.display())),
        "mqtt-pulse",
    );
    assert!(checked.contains("OK"), "{checked}");
    let toml: toml::Value = toml::from_str(&read(&config)).unwrap();
    for target in toml["target"].as_array().unwrap() {
        let url = url::Url::parse(target["url"].as_str().unwrap()).unwrap();
        assert_eq!(
            url.host_str(),
            Some("mosquitto"),
            "{url}: a target outside the stack"
        );
        assert_eq!(url.port(), Some(1883), "{url}");
    }
    let listen = flag(pulse, "--web.listen-address");
    let pulse_port = listen.rsplit(':').next().unwrap().to_owned();

    // mosquitto: the password and ACL files its config names are mounted.
    let mosquitto = &services["mosquitto"];
    let mosquitto_conf = read(&host_path(mosquitto, "/mosquitto/config/mosquitto.conf"));
    for key in ["password_file", "acl_file"] {
        let path = mosquitto_conf
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} ")))
            .unwrap_or_else(|| panic!("mosquitto.conf has no {key}"));
        assert!(host_path(mosquitto, path.trim()).is_file(), "{key} {path}");
    }

    // prometheus: promtool accepts the mounted config (and the rules it names);
    // it scrapes the mqtt-pulse service on the port it listens on.
    let prometheus = &services["prometheus"];
    let prometheus_yml = host_path(prometheus, &flag(prometheus, "--config.file"));
    succeed(
        Command::new("/usr/bin/promtool")
            .arg("check")
            .arg("config")
            .arg(&prometheus_yml),
        "prometheus",
    );
    let scrape = yaml_file(&prometheus_yml);
    let job = scrape["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["job_name"] == JOB)
        .unwrap_or_else(|| panic!("no job {JOB} in {}", prometheus_yml.display()));
    assert_eq!(
        job["static_configs"][0]["targets"],
        json!([format!("mqtt-pulse:{pulse_port}")])
    );

    // grafana: provisioned data source and dashboards, home dashboard present.
    let grafana = &services["grafana"];
    let provisioning = host_path(grafana, "/etc/grafana/provisioning");
    let datasources = yaml_file(&provisioning.join("datasources/prometheus.yml"));
    let datasource = &datasources["datasources"][0];
    assert_eq!(datasource["type"], "prometheus");
    assert_eq!(datasource["url"], "http://prometheus:9090");
    assert_eq!(datasource["isDefault"], true);
    let providers = yaml_file(&provisioning.join("dashboards/mqtt-pulse.yml"));
    let dashboards = host_path(
        grafana,
        providers["providers"][0]["options"]["path"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(
        dashboards.canonicalize().unwrap(),
        repo("dashboards").canonicalize().unwrap()
    );
    let environment = &grafana["environment"];
    assert_eq!(environment["GF_AUTH_ANONYMOUS_ENABLED"], "true");
    assert_eq!(environment["GF_AUTH_ANONYMOUS_ORG_ROLE"], "Viewer");
    let home = environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        .as_str()
        .unwrap();
    assert!(host_path(grafana, home).is_file(), "home dashboard {home}");

    // otel-collector: OTLP gRPC on 4317 into a metrics pipeline that logs.
    let collector = &services["otel-collector"];
    let otel = yaml_file(&host_path(collector, &flag(collector, "--config")));
    assert_eq!(
        otel["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        "0.0.0.0:4317"
    );
    let pipeline = &otel["service"]["pipelines"]["metrics"];
    assert_eq!(pipeline["receivers"], json!(["otlp"]));
    assert_eq!(pipeline["exporters"], json!(["debug"]));
    assert!(
        collector["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["target"] == 4317 || p.as_str().is_some_and(|s| s.ends_with(":4317"))),
        "otel-collector publishes 4317"
    );
}
