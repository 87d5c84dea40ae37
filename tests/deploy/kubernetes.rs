//! The kustomize base in `deploy/kubernetes/`, rendered by the real
//! `kubectl kustomize` (kubectl 1.32 with kustomize 5.5; rendering needs no
//! cluster) and checked object by object: against the binary (flags, env
//! variables, port, probe endpoints), against each other (names, selectors,
//! ports, the shard count against the replicas) and against the config in its
//! ConfigMap (every password file inside the Secret's mount, a key of that
//! Secret). `kubernetes-validate` (PyPI; its Kubernetes schemas are bundled, so
//! it runs offline; scripts/test installs it) validates every core object
//! against the Kubernetes 1.32 schemas. It has none for the prometheus-operator's
//! PodMonitor, which is checked against the pods here instead.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::dockerfile::{dockerfile, healthcheck_command};
use crate::support::daemon;
use crate::support::http::fetch;
use crate::support::{TempDir, free_port};
use crate::{JOB, exporter, output, read, repo, succeed, yaml_documents, yaml_file};

/// The kustomize base.
pub(crate) const BASE: &str = "deploy/kubernetes";
/// Its component that leaves out the PodMonitor, for clusters without the operator.
const WITHOUT_OPERATOR: &str = "deploy/kubernetes/without-operator";
/// The Prometheus config with the `kubernetes_sd_configs` job.
const SCRAPE_CONFIG: &str = "deploy/prometheus/kubernetes.yml";
/// The Kubernetes version the objects are validated against: kubectl's.
const KUBERNETES_VERSION: &str = "1.32.0";
/// The label the StatefulSet controller sets on each pod to its ordinal.
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The agreed environment variables of the shard flags (issue 17, item 1).
const SHARD_INDEX_ENV: &str = "MQTT_PULSE_SHARD_INDEX";
const SHARD_COUNT_ENV: &str = "MQTT_PULSE_SHARD_COUNT";

/// `kubernetes-validate`, installed by scripts/test in a virtualenv of its own.
fn kubernetes_validate() -> PathBuf {
    repo("target/tools/kubernetes-validate/bin/kubernetes-validate")
}

/// `kubectl kustomize dir`: the rendered objects.
pub(crate) fn render(dir: &Path) -> Vec<Value> {
    let rendered = succeed(
        Command::new("kubectl").arg("kustomize").arg(dir),
        "kubectl (v1.32, with kustomize; not Debian's older kubernetes-client)",
    );
    yaml_documents(&rendered, &format!("kubectl kustomize {}", dir.display()))
}

/// `target` (a path in the repository) as an overlay in a temporary directory
/// names it: relative, as kustomize requires.
fn relative(target: &str) -> PathBuf {
    let depth = std::env::temp_dir().components().count();
    let mut path = PathBuf::new();
    for _ in 0..depth {
        path.push("..");
    }
    path.join(repo(target).strip_prefix("/").unwrap())
}

/// An overlay of the base, as a user writes one (outside the base, naming it by
/// a relative path), with `rest` after its `resources:`; rendered.
fn overlay(rest: &str) -> Vec<Value> {
    let dir = TempDir::new("kustomize-overlay");
    assert_eq!(dir.parent(), Some(std::env::temp_dir().as_path()));
    fs::write(
        dir.join("kustomization.yaml"),
        format!("resources:\n  - {}\n{rest}", relative(BASE).display()),
    )
    .unwrap();
    render(dir.path())
}

/// The rendered base, looked up by kind and name.
pub(crate) struct Rendered {
    pub(crate) objects: Vec<Value>,
}

impl Rendered {
    pub(crate) fn base() -> Rendered {
        Rendered {
            objects: render(&repo(BASE)),
        }
    }

    /// The one object of `kind` called `name` (generated names with their hash suffix).
    pub(crate) fn get(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<&Value> = self
            .objects
            .iter()
            .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .collect();
        assert_eq!(found.len(), 1, "{kind} {name}: {found:?}");
        found[0]
    }

    /// The one object of `kind`.
    pub(crate) fn only(&self, kind: &str) -> &Value {
        let found: Vec<&Value> = self.objects.iter().filter(|o| o["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "one {kind}: {found:?}");
        found[0]
    }

    pub(crate) fn statefulset(&self) -> &Value {
        self.only("StatefulSet")
    }

    /// The StatefulSet's one container.
    pub(crate) fn container(&self) -> &Value {
        let containers = self.statefulset()["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1, "one container: {containers:?}");
        &containers[0]
    }

    /// The volume mounted as `volume` and its mount path.
    pub(crate) fn mount(&self, volume: &str) -> (&Value, String) {
        let pod = &self.statefulset()["spec"]["template"]["spec"];
        let source = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == volume)
            .unwrap_or_else(|| panic!("no volume {volume}"));
        let path = self.container()["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap_or_else(|| panic!("volume {volume} not mounted"))["mountPath"]
            .as_str()
            .unwrap()
            .to_owned();
        (source, path)
    }

    /// The ConfigMap mounted as `volume`, its mount path and its files.
    pub(crate) fn config_map(&self, volume: &str) -> (String, BTreeMap<String, String>) {
        let (source, path) = self.mount(volume);
        let map = self.get("ConfigMap", source["configMap"]["name"].as_str().unwrap());
        let files = map["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        (path, files)
    }

    /// The Secret mounted as `volume`, its mount path and its files (decoded).
    pub(crate) fn secret(&self, volume: &str) -> (String, BTreeMap<String, Vec<u8>>) {
        use base64::Engine as _;
        let (source, path) = self.mount(volume);
        let secret = self.get("Secret", source["secret"]["secretName"].as_str().unwrap());
        let files = secret["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap())
                    .unwrap_or_else(|e| panic!("Secret key {k}: {e}"));
                (k.clone(), bytes)
            })
            .collect();
        (path, files)
    }

    /// The container's `--name=value` arguments.
    pub(crate) fn args(&self) -> Vec<(String, String)> {
        self.container()["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|arg| {
                let arg = arg.as_str().unwrap();
                let (name, value) = arg
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{arg}: write flags as --name=value"));
                (name.to_owned(), value.to_owned())
            })
            .collect()
    }

    pub(crate) fn arg(&self, name: &str) -> String {
        self.args()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} in the container's args"))
            .1
    }

    /// The container's env entries by name.
    pub(crate) fn env(&self) -> BTreeMap<String, Value> {
        self.container()["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| (e["name"].as_str().unwrap().to_owned(), e.clone()))
            .collect()
    }

    pub(crate) fn replicas(&self) -> u64 {
        self.statefulset()["spec"]["replicas"].as_u64().unwrap()
    }

    /// The config file the container reads (`--config.file`) from its ConfigMap.
    pub(crate) fn config(&self) -> (String, toml::Value) {
        let (mount, files) = self.config_map("config");
        let path = self.arg("--config.file");
        let key = path
            .strip_prefix(&format!("{mount}/"))
            .unwrap_or_else(|| panic!("--config.file={path} is outside the config mount {mount}"));
        let text = files
            .get(key)
            .unwrap_or_else(|| panic!("--config.file={path}: the ConfigMap has no key {key}"));
        (text.clone(), toml::from_str(text).unwrap())
    }
}

/// The pod template's labels.
fn pod_labels(rendered: &Rendered) -> &serde_json::Map<String, Value> {
    rendered.statefulset()["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap()
}

/// True when every `matchLabels` pair is a label of the pods.
fn selects_the_pods(rendered: &Rendered, selector: &Value) -> bool {
    let labels = pod_labels(rendered);
    let wanted = selector["matchLabels"].as_object().unwrap();
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The flags and the environment variables `mqtt-pulse --help` lists.
fn help_flags_and_env() -> (BTreeSet<String>, BTreeSet<String>) {
    let help = succeed(daemon::command().arg("--help"), "mqtt-pulse");
    let mut flags = BTreeSet::new();
    let mut env = BTreeSet::new();
    for word in help.split(|c: char| c.is_whitespace() || c == ',' || c == '[') {
        if let Some(flag) = word.strip_prefix("--") {
            let flag: String = flag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                .collect();
            flags.insert(format!("--{flag}"));
        }
    }
    for part in help.split("[env: ").skip(1) {
        env.insert(part.split('=').next().unwrap().to_owned());
    }
    (flags, env)
}

/// A Kubernetes quantity ("50m", "64Mi", "1") in base units (cores, bytes).
fn quantity(value: &Value) -> f64 {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let suffixes: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("m", 0.001),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
    ];
    for (suffix, factor) in suffixes {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<f64>().unwrap() * factor;
        }
    }
    text.parse().unwrap_or_else(|_| panic!("quantity {text:?}"))
}

#[test]
fn the_kustomize_base_renders_every_object_and_each_passes_the_kubernetes_schemas() {
    let rendered = Rendered::base();
    let kinds: BTreeSet<&str> = rendered
        .objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ConfigMap",
            "PodDisruptionBudget",
            "PodMonitor",
            "Secret",
            "Service",
            "StatefulSet"
        ])
    );
    assert_eq!(
        rendered.objects.len(),
        kinds.len(),
        "one object of each kind"
    );

    // Every object against the Kubernetes 1.32 schemas, strictly (an unknown
    // field is an error). The PodMonitor is a custom resource the validator
    // has no schema for: it only warns about it; it is checked below.
    let dir = TempDir::new("kubernetes-validate");
    let validate = |objects: &[Value], name: &str| {
        let file = dir.join(name);
        // JSON is YAML: one document per object.
        let documents: Vec<String> = objects
            .iter()
            .map(|o| serde_json::to_string(o).unwrap())
            .collect();
        fs::write(&file, documents.join("\n---\n")).unwrap();
        output(
            Command::new(kubernetes_validate()).args([
                "--kubernetes-version",
                KUBERNETES_VERSION,
                "--strict",
                "--quiet",
                file.to_str().unwrap(),
            ]),
            "kubernetes-validate (PyPI; scripts/test installs it in target/tools)",
        )
    };
    let valid = validate(&rendered.objects, "rendered.yaml");
    assert!(
        valid.status.success(),
        "kubernetes-validate rejects the rendered base:\n{}{}",
        crate::text(&valid.stdout),
        crate::text(&valid.stderr)
    );
    // The validator does reject what a cluster would: a mistyped field.
    let mut broken = rendered.objects.clone();
    let statefulset = broken
        .iter_mut()
        .find(|o| o["kind"] == "StatefulSet")
        .unwrap();
    statefulset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] =
        json!("yes");
    let invalid = validate(&broken, "broken.yaml");
    assert!(
        !invalid.status.success(),
        "kubernetes-validate accepted readOnlyRootFilesystem: \"yes\""
    );

    // Clusters without the prometheus-operator: the component drops the
    // PodMonitor and nothing else.
    let without = overlay(&format!(
        "components:\n  - {}\n",
        relative(WITHOUT_OPERATOR).display()
    ));
    let without_kinds: BTreeSet<&str> = without
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    let mut expected = kinds.clone();
    expected.remove("PodMonitor");
    assert_eq!(without_kinds, expected);
    assert_eq!(without.len(), rendered.objects.len() - 1);
}

#[test]
fn the_statefulset_runs_hardened_and_sized() {
    let rendered = Rendered::base();
    let pod = &rendered.statefulset()["spec"]["template"]["spec"];
    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    // The user is the image's own (Dockerfile USER), so the pod runs the image
    // as built and runAsNonRoot can check a number.
    let user = dockerfile()
        .into_iter()
        .find(|i| i.stage == "final" && i.keyword == "USER")
        .unwrap()
        .args;
    let (uid, gid) = user.split_once(':').unwrap();
    assert_eq!(security["runAsUser"].to_string(), uid);
    assert_eq!(security["runAsGroup"].to_string(), gid);
    assert_ne!(uid, "0");
    assert_eq!(
        pod["automountServiceAccountToken"], false,
        "no API access needed"
    );

    let container = rendered.container();
    let context = &container["securityContext"];
    assert_eq!(context["readOnlyRootFilesystem"], true);
    assert_eq!(context["allowPrivilegeEscalation"], false);
    assert_eq!(context["runAsNonRoot"], true);
    assert_eq!(context["capabilities"]["drop"], json!(["ALL"]));
    assert!(context["capabilities"].get("add").is_none());
    assert!(context.get("privileged").is_none_or(|p| p == false));

    // Requests and limits for both resources, each request within its limit.
    // The figures come from BENCHMARKS.md; statefulset.yaml says which.
    let resources = &container["resources"];
    for resource in ["cpu", "memory"] {
        let request = quantity(&resources["requests"][resource]);
        let limit = quantity(&resources["limits"][resource]);
        assert!(
            request > 0.0 && request <= limit,
            "{resource}: request {request} limit {limit}"
        );
    }
    // 1,000 connections hold 48.8 MiB ("/events streams", no stream) and a
    // reconnect storm peaks at 55.8 MiB ("Soak"): the request covers the first,
    // the limit leaves room above the second.
    assert!(quantity(&resources["requests"]["memory"]) >= 48.8 * 1024.0 * 1024.0);
    assert!(quantity(&resources["limits"]["memory"]) >= 2.0 * 55.8 * 1024.0 * 1024.0);
    let statefulset_source = read(&repo("deploy/kubernetes/statefulset.yaml"));
    for cited in ["48.8", "55.8", "40.2 KiB"] {
        assert!(
            statefulset_source.contains(cited) && read(&repo("BENCHMARKS.md")).contains(cited),
            "statefulset.yaml's sizing cites {cited} from BENCHMARKS.md"
        );
    }

    // The image is this version's.
    let image = container["image"].as_str().unwrap();
    assert_eq!(
        image,
        format!("mqtt-pulse:{}", env!("CARGO_PKG_VERSION")),
        "overlays retag it with kustomize's images:"
    );
}

#[test]
fn the_statefulset_passes_only_flags_and_env_the_binary_has_and_one_shard_per_pod() {
    // Needs the shard flags (branch `shards`, issue 17 item 1): the env names
    // below are theirs.
    let rendered = Rendered::base();
    let (flags, env_names) = help_flags_and_env();
    for (flag, _) in rendered.args() {
        assert!(
            flags.contains(&flag),
            "{flag} is not a flag of mqtt-pulse: {flags:?}"
        );
    }
    let env = rendered.env();
    for name in env.keys() {
        assert!(
            env_names.contains(name),
            "{name} is read by no flag of mqtt-pulse: {env_names:?}"
        );
    }
    for flag in ["--shard.count", "--shard.index"] {
        assert!(flags.contains(flag), "mqtt-pulse has no {flag}");
    }

    // Each pod is one shard: its index from the pod-index label (the ordinal),
    // the count from the replicas.
    assert_eq!(
        env[SHARD_INDEX_ENV]["valueFrom"]["fieldRef"]["fieldPath"],
        format!("metadata.labels['{POD_INDEX_LABEL}']")
    );
    assert_eq!(
        env[SHARD_COUNT_ENV]["value"],
        rendered.replicas().to_string(),
        "{SHARD_COUNT_ENV} must equal the replicas"
    );
    assert_eq!(
        rendered.statefulset()["spec"]["podManagementPolicy"],
        "Parallel"
    );
    // ... and stays so when the replicas change: kustomization.yaml's
    // replacement copies them.
    let copy = TempDir::new("kustomize-replicas");
    for entry in fs::read_dir(repo(BASE)).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
    }
    fs::create_dir(copy.join("passwords")).unwrap();
    for entry in fs::read_dir(repo(BASE).join("passwords")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), copy.join("passwords").join(entry.file_name())).unwrap();
    }
    let statefulset = read(&copy.join("statefulset.yaml"));
    let replicas = format!("replicas: {}", rendered.replicas());
    assert_eq!(statefulset.matches(&replicas).count(), 1);
    fs::write(
        copy.join("statefulset.yaml"),
        statefulset.replace(&replicas, "replicas: 5"),
    )
    .unwrap();
    let five = Rendered {
        objects: render(copy.path()),
    };
    assert_eq!(five.replicas(), 5);
    assert_eq!(five.env()[SHARD_COUNT_ENV]["value"], "5");

    // The binary takes the args and env as the pod gives them: the config
    // check passes with them, for each shard, and the shards together own
    // every target of the ConfigMap exactly once.
    let dir = TempDir::new("kubernetes-config-check");
    let config = local_config(&rendered, &dir);
    let mut owners: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for index in 0..rendered.replicas() {
        let mut command = daemon::command();
        command
            .arg("--config.check")
            .env(SHARD_INDEX_ENV, index.to_string())
            .env(
                SHARD_COUNT_ENV,
                env[SHARD_COUNT_ENV]["value"].as_str().unwrap(),
            );
        for (name, value) in rendered.args() {
            let value = if name == "--config.file" {
                config.display().to_string()
            } else {
                value
            };
            command.arg(format!("{name}={value}"));
        }
        let checked = succeed(&mut command, "mqtt-pulse");
        assert!(checked.contains("OK"), "shard {index}: {checked}");
        // "…; shard 0 of 2 (indexes from 0) owns 1 (plant-b)"
        let owned = checked
            .trim()
            .split_once(" owns ")
            .unwrap_or_else(|| panic!("shard {index}: which targets? {checked}"))
            .1;
        if let Some((_, names)) = owned.split_once(" (") {
            for name in names.trim_end_matches(')').split(", ") {
                owners.entry(name.to_owned()).or_default().push(index);
            }
        }
    }
    let (_, config) = rendered.config();
    let names: Vec<String> = config["target"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        owners.keys().cloned().collect::<Vec<_>>(),
        names
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>(),
        "every target owned by some shard: {owners:?}"
    );
    for (name, shards) in &owners {
        assert_eq!(shards.len(), 1, "{name} owned by shards {shards:?}");
    }
}

/// The ConfigMap's config and the Secret's files in `dir`, laid out as the pod
/// mounts them below `dir`: the config's absolute paths are prefixed with `dir`.
fn local_config(rendered: &Rendered, dir: &Path) -> PathBuf {
    let (config_mount, config_files) = rendered.config_map("config");
    let (secret_mount, secret_files) = rendered.secret("passwords");
    let inside = |mount: &str| dir.join(mount.trim_start_matches('/'));
    fs::create_dir_all(inside(&config_mount)).unwrap();
    fs::create_dir_all(inside(&secret_mount)).unwrap();
    for (key, bytes) in &secret_files {
        fs::write(inside(&secret_mount).join(key), bytes).unwrap();
    }
    let (text, _) = rendered.config();
    let text = text.replace(
        &format!("\"{secret_mount}/"),
        &format!("\"{}/", inside(&secret_mount).display()),
    );
    let path = dir.join(rendered.arg("--config.file").trim_start_matches('/'));
    fs::write(&path, text).unwrap();
    assert!(config_files.len() == 1, "one config file: {config_files:?}");
    path
}

#[test]
fn the_port_service_probes_and_monitors_reach_the_daemon() {
    let rendered = Rendered::base();
    let container = rendered.container();

    // The port: the one the daemon listens on, named for the Service, the
    // probes and the PodMonitor; the Dockerfile exposes it.
    let listen = rendered.arg("--web.listen-address");
    let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let ports = container["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0]["containerPort"], port);
    let port_name = ports[0]["name"].as_str().unwrap();
    let exposed: Vec<String> = dockerfile()
        .into_iter()
        .filter(|i| i.stage == "final" && i.keyword == "EXPOSE")
        .map(|i| i.args)
        .collect();
    assert_eq!(exposed, [port.to_string()]);
    let healthcheck = healthcheck_command();
    assert!(
        healthcheck.contains(&format!("--web.listen-address=127.0.0.1:{port}")),
        "{healthcheck:?}"
    );

    // The headless Service the StatefulSet names, over the pods, on that port.
    let service = rendered.only("Service");
    assert_eq!(
        rendered.statefulset()["spec"]["serviceName"],
        service["metadata"]["name"]
    );
    assert_eq!(service["spec"]["clusterIP"], "None");
    let labels = pod_labels(&rendered);
    let selector = service["spec"]["selector"].as_object().unwrap();
    assert!(!selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port_name);
    assert_eq!(service["spec"]["ports"][0]["port"], port);
    assert!(selects_the_pods(
        &rendered,
        &rendered.statefulset()["spec"]["selector"]
    ));

    // At most one shard down at a time, and only these pods.
    let budget = rendered.only("PodDisruptionBudget");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert!(selects_the_pods(&rendered, &budget["spec"]["selector"]));

    // The PodMonitor scrapes these pods on that port, as job="mqtt-pulse"
    // (the job the alert rules and dashboards select).
    let monitor = rendered.only("PodMonitor");
    assert!(selects_the_pods(&rendered, &monitor["spec"]["selector"]));
    let endpoints = monitor["spec"]["podMetricsEndpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["port"], port_name);
    assert_eq!(endpoints[0]["path"], "/metrics");
    let job_label = monitor["spec"]["jobLabel"].as_str().unwrap();
    assert_eq!(labels[job_label], JOB);

    // The probes: on the named port, at the paths the daemon serves, which
    // answer 200 on the real binary.
    let live = &container["livenessProbe"]["httpGet"];
    let ready = &container["readinessProbe"]["httpGet"];
    assert_eq!(live["path"], "/-/healthy");
    assert_eq!(ready["path"], "/-/ready");
    assert_eq!(live["port"], port_name);
    assert_eq!(ready["port"], port_name);
    let dir = TempDir::new("kubernetes-probes");
    let config = dir.join("mqtt-pulse.toml");
    let nowhere = free_port();
    fs::write(
        &config,
        format!("[[target]]\nname = \"x\"\nurl = \"mqtt://127.0.0.1:{nowhere}\"\n"),
    )
    .unwrap();
    let exporter = exporter(&dir, &config);
    for probe in [live, ready, &json!({"path": "/metrics"})] {
        let path = probe["path"].as_str().unwrap();
        let answer = fetch(exporter.port(), "GET", path).unwrap();
        assert_eq!(answer.status, 200, "GET {path}");
    }
}

#[test]
fn the_mounts_hold_every_file_the_config_names_and_client_ids_differ_per_pod() {
    let rendered = Rendered::base();
    let (text, config) = rendered.config();
    let (config_mount, _) = rendered.config_map("config");
    let (secret_mount, secrets) = rendered.secret("passwords");
    let (secret_volume, _) = rendered.mount("passwords");
    for (volume, read_only) in [("config", true), ("passwords", true)] {
        let mount = rendered.container()["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap();
        assert_eq!(mount["readOnly"], read_only, "{volume}");
    }
    assert!(
        !secret_mount.starts_with(&format!("{config_mount}/")),
        "the Secret is not mounted inside the ConfigMap's read-only mount"
    );

    // Password files only readable by the pod's group: 0440 with fsGroup.
    let mode = secret_volume["secret"]["defaultMode"].as_u64().unwrap();
    assert_eq!(mode & 0o007, 0, "defaultMode {mode:o}: not world-readable");
    assert_eq!(mode & 0o040, 0o040, "defaultMode {mode:o}: group-readable");
    let pod = &rendered.statefulset()["spec"]["template"]["spec"];
    assert_eq!(
        pod["securityContext"]["fsGroup"],
        pod["securityContext"]["runAsGroup"]
    );

    let targets = config["target"].as_array().unwrap();
    assert!(!targets.is_empty());
    let mut used = BTreeSet::new();
    for target in targets {
        let name = target["name"].as_str().unwrap();
        // No inline passwords in a ConfigMap: each comes from the Secret.
        assert!(target.get("password").is_none(), "{name}: inline password");
        let file = target["password_file"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no password_file"));
        let key = file
            .strip_prefix(&format!("{secret_mount}/"))
            .unwrap_or_else(|| {
                panic!("{name}: {file} is outside the Secret's mount {secret_mount}")
            });
        assert!(
            secrets.contains_key(key),
            "{name}: the Secret has no key {key}"
        );
        used.insert(key.to_owned());
        // Every other file (TLS) in one of the two mounts too.
        if let Some(tls) = target.get("tls").and_then(toml::Value::as_table) {
            for (field, path) in tls {
                if let Some(path) = path.as_str() {
                    assert!(
                        path.starts_with(&format!("{secret_mount}/"))
                            || path.starts_with(&format!("{config_mount}/")),
                        "{name}: tls.{field} = {path} is in no mount"
                    );
                }
            }
        }
        // Pods never share a client id: each carries the pod's name.
        let client_id = target
            .get("client_id")
            .or(config.get("defaults").and_then(|d| d.get("client_id")))
            .and_then(toml::Value::as_str)
            .unwrap_or_else(|| panic!("{name}: no client_id, here or in [defaults]"));
        assert!(client_id.contains("{hostname}"), "{name}: {client_id}");
    }
    let keys: BTreeSet<String> = secrets.keys().cloned().collect();
    assert_eq!(keys, used, "every Secret key is a target's password file");
    assert!(!text.contains("password ="), "a password in the ConfigMap");
}

#[test]
fn the_kubernetes_scrape_job_keeps_the_pods_and_port_of_the_base() {
    let rendered = Rendered::base();
    let path = repo(SCRAPE_CONFIG);
    let config = yaml_file(&path);
    let jobs = config["scrape_configs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job["job_name"], JOB);
    let sd = &job["kubernetes_sd_configs"].as_array().unwrap()[0];
    assert_eq!(sd["role"], "pod");

    // The label selector and every keep rule hold for the base's pods and port
    // (the regexes are literal values; Prometheus anchors them).
    let labels = pod_labels(&rendered);
    let port_name = rendered.container()["ports"][0]["name"].as_str().unwrap();
    for selector in sd["selectors"].as_array().into_iter().flatten() {
        for pair in selector["label"].as_str().unwrap().split(',') {
            let (key, value) = pair.split_once('=').unwrap();
            assert_eq!(
                labels.get(key).and_then(Value::as_str),
                Some(value),
                "{pair}"
            );
        }
    }
    let mut kept_port = false;
    for rule in job["relabel_configs"].as_array().unwrap() {
        if rule["action"] != "keep" {
            continue;
        }
        let source = rule["source_labels"][0].as_str().unwrap();
        let regex = rule["regex"].as_str().unwrap();
        if let Some(label) = source.strip_prefix("__meta_kubernetes_pod_label_") {
            let value = labels
                .iter()
                .find(|(k, _)| {
                    k.chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                        .collect::<String>()
                        == label
                })
                .unwrap_or_else(|| panic!("{source}: the pods have no such label"))
                .1;
            assert_eq!(value, regex, "{source}");
        } else if source == "__meta_kubernetes_pod_container_port_name" {
            assert_eq!(regex, port_name);
            kept_port = true;
        } else {
            panic!("keep on {source}: not checked here");
        }
    }
    assert!(kept_port, "the job keeps only the metrics port");

    // promtool checks the rest. Debian's Prometheus is built without the
    // Kubernetes service discovery (promtool rejects kubernetes_sd_configs), so
    // the job is checked with a static target in its place.
    let dir = TempDir::new("kubernetes-scrape-config");
    let mut checked = config.clone();
    let job = &mut checked["scrape_configs"][0];
    job.as_object_mut().unwrap().remove("kubernetes_sd_configs");
    job["static_configs"] = json!([{"targets": ["mqtt-pulse-0.mqtt-pulse:9883"]}]);
    for rule in checked["rule_files"].as_array().unwrap() {
        let rule = rule.as_str().unwrap();
        fs::copy(path.parent().unwrap().join(rule), dir.join(rule)).unwrap();
    }
    let copy = dir.join("kubernetes.yml");
    fs::write(&copy, serde_json::to_string(&checked).unwrap()).unwrap();
    succeed(
        Command::new("/usr/bin/promtool")
            .args(["check", "config"])
            .arg(&copy),
        "prometheus",
    );
}

#[test]
fn a_vantage_point_overlay_renames_the_pods_and_selects_and_labels_only_its_own() {
    // README, Running many: one deployment per place, named apart (so the
    // {hostname} in the client ids differs) and labelled `vantage`, which
    // Prometheus puts on the series.
    let eu = Rendered {
        objects: overlay(
            "nameSuffix: -eu\n\
             labels:\n  - pairs: {vantage: eu}\n    includeSelectors: true\n    includeTemplates: true\n",
        ),
    };
    let statefulset = eu.statefulset();
    assert_eq!(statefulset["metadata"]["name"], "mqtt-pulse-eu");
    assert_eq!(statefulset["spec"]["serviceName"], "mqtt-pulse-eu");
    assert_eq!(eu.only("Service")["metadata"]["name"], "mqtt-pulse-eu");
    assert_eq!(pod_labels(&eu)["vantage"], "eu");
    // Every selector takes only this place's pods: another place's deployment
    // in the same namespace is neither served, nor budgeted, nor scraped by it
    // (kustomizeconfig.yaml teaches kustomize the PodMonitor's selector).
    for (kind, selector) in [
        ("StatefulSet", &statefulset["spec"]["selector"]),
        (
            "PodDisruptionBudget",
            &eu.only("PodDisruptionBudget")["spec"]["selector"],
        ),
        ("PodMonitor", &eu.only("PodMonitor")["spec"]["selector"]),
    ] {
        assert!(selects_the_pods(&eu, selector), "{kind}");
        assert_eq!(selector["matchLabels"]["vantage"], "eu", "{kind}");
    }
    assert_eq!(eu.only("Service")["spec"]["selector"]["vantage"], "eu");
    // The mounts follow the renamed ConfigMap and Secret; the shard count the
    // replicas.
    let (_, config) = eu.config();
    assert!(config["target"].as_array().is_some_and(|t| !t.is_empty()));
    let (_, secrets) = eu.secret("passwords");
    assert!(!secrets.is_empty());
    assert_eq!(
        eu.env()[SHARD_COUNT_ENV]["value"],
        eu.replicas().to_string()
    );

    // Both scrape paths turn the pod label into a `vantage` target label.
    assert!(
        eu.only("PodMonitor")["spec"]["podTargetLabels"]
            .as_array()
            .unwrap()
            .contains(&json!("vantage"))
    );
    let job = &yaml_file(&repo(SCRAPE_CONFIG))["scrape_configs"][0];
    assert!(
        job["relabel_configs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|rule| {
                rule["source_labels"] == json!(["__meta_kubernetes_pod_label_vantage"])
                    && rule["target_label"] == "vantage"
            }),
        "{job}"
    );
}
