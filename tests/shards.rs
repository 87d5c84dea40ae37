//! Sharding (issue 17): real `mqtt-pulse` processes with `--shard.count` over
//! one config of 300 targets on a real Mosquitto, and a real Prometheus
//! scraping them.
//!
//! * Three shards watch every target exactly once, in shares of about a
//!   third, as `--config.check` says; Prometheus sums them with the rules of
//!   deploy/prometheus/recording.yml; a killed shard's `up` turns 0 and its
//!   `mqtt_pulse_targets` goes stale — what the `MqttPulseShardDown` unit
//!   test in deploy/prometheus/alerts_test.yml is written from — and the
//!   alert's expression, loaded from deploy/prometheus/alerts.yml, names it.
//! * A fourth shard moves about a quarter of the targets, all to itself.
//! * A resharding rollout (old and new shards running at once) with
//!   `{hostname}` client ids from a `[defaults]` template: no replica kicks
//!   another. With one id in both, the broker does, and the sharded daemon
//!   warns of it.
//! * Reload keeps the shard; `/-/ready` waits for every owned target's first
//!   attempt; bad shard flags are one line; a shared file may hold more
//!   targets than one process watches, a share may not.
#![cfg(feature = "daemon")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mqtt_pulse::daemon::Shard;
use nix::sys::signal::Signal;
use support::daemon::{self, Daemon};
use support::http::ready;
use support::metrics::Metrics;
use support::prometheus::Prometheus;
use support::{Broker, TempDir, poll, text, wait_until};

/// Targets in the shared config.
const TARGETS: usize = 300;
/// How long a fleet of 300 connections, Prometheus or a rollout step may take.
const DEADLINE: Duration = Duration::from_secs(40);
/// How long a daemon may take to stop on SIGTERM.
const SHUTDOWN: Duration = Duration::from_secs(10);
/// The client id recipe for replicas.
const PER_HOST_ID: &str = "mqtt-pulse-{hostname}-{name}";

fn names() -> Vec<String> {
    (0..TARGETS).map(|i| format!("meter-{i:03}")).collect()
}

/// One config of [`TARGETS`] targets on the broker at `url`, with a
/// `client_id` template in `[defaults]` if given.
fn write_config(dir: &Path, url: &str, client_id: Option<&str>) -> PathBuf {
    let mut config = String::from(
        "[defaults]\nkeep_alive = \"2s\"\nbackoff = { initial = \"100ms\", max = \"1s\" }\n",
    );
    if let Some(id) = client_id {
        writeln!(config, "client_id = \"{id}\"").unwrap();
    }
    for name in names() {
        write!(config, "[[target]]\nname = \"{name}\"\nurl = \"{url}\"\n").unwrap();
    }
    let path = dir.join("mqtt-pulse.toml");
    fs::write(&path, config).unwrap();
    path
}

/// What `--config.check` says shard `index` of `count` owns.
fn owned_by_check(config: &Path, count: u32, index: u32) -> Vec<String> {
    let output = daemon::run(&[
        "--config.check",
        "--config.file",
        config.to_str().unwrap(),
        "--shard.count",
        &count.to_string(),
        "--shard.index",
        &index.to_string(),
    ]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    let expected = format!(
        "{}: OK, {TARGETS} targets; shard {index} of {count} (indexes from 0) owns ",
        config.display()
    );
    let line = stdout.trim_end();
    let rest = line
        .strip_prefix(&expected)
        .unwrap_or_else(|| panic!("{line:?} does not start with {expected:?}"));
    let (owned, list) = rest.split_once(" (").unwrap();
    let list: Vec<String> = match list.strip_suffix(')').unwrap() {
        "" => Vec::new(),
        list => list.split(", ").map(String::from).collect(),
    };
    assert_eq!(owned.parse::<usize>().unwrap(), list.len(), "{line}");
    list
}

/// The client ids a daemon's page has an `mqtt_client_up` for.
fn client_ids(metrics: &Metrics) -> BTreeSet<String> {
    metrics
        .samples
        .iter()
        .filter(|sample| sample.name == "mqtt_client_up")
        .map(|sample| sample.labels["client_id"].clone())
        .collect()
}

/// Waits until every client on `daemon`'s page is up, `count` of them.
fn all_up(daemon: &Daemon, count: usize) -> Metrics {
    daemon.wait_for_metrics(&format!("{count} clients up"), |metrics| {
        let ids = client_ids(metrics);
        ids.len() == count && ids.iter().all(|id| metrics.up(id) == Some(1.0))
    })
}

/// A shard daemon over `config`: `--shard.count count`, the index as
/// `--shard.index hostname` with `HOSTNAME=mqtt-pulse-<index>` (a StatefulSet
/// pod's name). Returned once ready: each owned target attempted.
fn pod(dir: &Path, config: &Path, count: u32, index: u32) -> Daemon {
    let host = format!("mqtt-pulse-{index}");
    let count = count.to_string();
    let args = [
        "--config.file",
        config.to_str().unwrap(),
        "--shard.count",
        &count,
        "--shard.index",
        "hostname",
    ];
    Daemon::start_with_env(dir, &args, &[("HOSTNAME", &host)], ready)
}

#[test]
fn three_shards_watch_every_target_once_and_prometheus_sees_a_killed_one_down() {
    let broker = Broker::builder().quiet().start();
    let dir = TempDir::new("shards-three");
    let config = write_config(&dir, &broker.url(), None);
    let file = config.to_str().unwrap();
    // Each way of naming the index: the flag, the environment (the downward
    // API), and the host name's ordinal.
    let shards = [
        Daemon::start(
            &dir,
            &[
                "--config.file",
                file,
                "--shard.count",
                "3",
                "--shard.index",
                "0",
            ],
            ready,
        ),
        Daemon::start_with_env(
            &dir,
            &["--config.file", file],
            &[
                ("MQTT_PULSE_SHARD_COUNT", "3"),
                ("MQTT_PULSE_SHARD_INDEX", "1"),
            ],
            ready,
        ),
        Daemon::start_with_env(
            &dir,
            &[
                "--config.file",
                file,
                "--shard.count",
                "3",
                "--shard.index",
                "hostname",
            ],
            &[("HOSTNAME", "mqtt-pulse-2")],
            ready,
        ),
    ];
    // Each shard runs what --config.check says it owns, and says so.
    let mut shares = Vec::new();
    for (index, shard) in (0u32..).zip(&shards) {
        let owned = owned_by_check(&config, 3, index);
        let metrics = all_up(shard, owned.len());
        let expected: BTreeSet<String> = owned.iter().map(|n| format!("mqtt-pulse-{n}")).collect();
        assert_eq!(client_ids(&metrics), expected, "shard {index}");
        let index_label = index.to_string();
        let gauge = [("shard_index", index_label.as_str()), ("shard_count", "3")];
        assert_eq!(
            metrics.value("mqtt_pulse_targets", &gauge),
            Some(owned.len() as f64),
            "shard {index}:\n{}",
            metrics.text
        );
        assert_eq!(
            support::prometheus::promtool_problems(&metrics.text),
            None,
            "promtool check metrics, shard {index}"
        );
        shares.push(owned.len());
    }

    // Prometheus scrapes the three, with the deploy rules.
    let instances: Vec<String> = shards
        .iter()
        .map(|shard| format!("127.0.0.1:{}", shard.port()))
        .collect();
    let prometheus_dir = TempDir::new("shards-prometheus");
    for rules in ["alerts.yml", "recording.yml"] {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/prometheus")
            .join(rules);
        fs::copy(from, prometheus_dir.join(rules)).unwrap();
    }
    let prometheus_yml = prometheus_dir.join("prometheus.yml");
    fs::write(
        &prometheus_yml,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: [alerts.yml, recording.yml]\n\
             scrape_configs:\n  - job_name: mqtt-pulse\n    static_configs:\n      \
             - targets: ['{}']\n",
            instances.join("', '")
        ),
    )
    .unwrap();
    let prometheus = Prometheus::start(&prometheus_dir, &prometheus_yml);
    let everything = r#"count(count by (client_id) (mqtt_client_up{job="mqtt-pulse"}))"#;
    let seen = poll(DEADLINE, Duration::from_millis(100), || {
        let all = prometheus.value(everything)? as usize == TARGETS;
        let summed = prometheus.value("job:mqtt_pulse_targets:sum")? as usize == TARGETS;
        (all && summed).then_some(())
    });
    assert!(
        seen.is_some(),
        "Prometheus never saw every target:\n{}",
        prometheus.log()
    );

    // Every target exactly once: `count by (client_id)` is 1 for all 300.
    let counts = prometheus
        .query(r#"count by (client_id) (mqtt_client_up{job="mqtt-pulse"})"#)
        .unwrap();
    assert_eq!(counts.len(), TARGETS);
    let ids: BTreeSet<String> = counts
        .iter()
        .map(|sample| {
            assert_eq!(sample["value"][1], "1", "{sample}");
            sample["metric"]["client_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let expected: BTreeSet<String> = names().iter().map(|n| format!("mqtt-pulse-{n}")).collect();
    assert_eq!(ids, expected);
    // The shares sum to 300, each within ±20% of 100.
    let mut by_instance = BTreeMap::new();
    for sample in prometheus.query("mqtt_pulse_targets").unwrap() {
        let instance = sample["metric"]["instance"].as_str().unwrap().to_owned();
        let share: usize = sample["value"][1].as_str().unwrap().parse().unwrap();
        let index: usize = sample["metric"]["shard_index"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(instances[index], instance, "{sample}");
        assert_eq!(sample["metric"]["shard_count"], "3", "{sample}");
        by_instance.insert(index, share);
    }
    assert_eq!(by_instance.values().copied().collect::<Vec<_>>(), shares);
    assert_eq!(shares.iter().sum::<usize>(), TARGETS);
    for share in &shares {
        assert!((80..=120).contains(share), "shares {shares:?}");
    }
    assert_eq!(prometheus.value("job:mqtt_pulse_shards:count"), Some(3.0));
    let up = poll(DEADLINE, Duration::from_millis(100), || {
        (prometheus.value("job:mqtt_client_up:sum")? as usize == TARGETS).then_some(())
    });
    assert!(
        up.is_some(),
        "not every client up in job:mqtt_client_up:sum"
    );

    // Kill shard 1: its `up` goes to 0, and its mqtt_pulse_targets goes stale
    // at once (absent from an instant query) — the input of alerts_test.yml.
    shards[1].signal(Signal::SIGKILL);
    let down = format!(
        r#"up{{job="mqtt-pulse", instance="{}"}} == 0"#,
        instances[1]
    );
    let went_down = poll(DEADLINE, Duration::from_millis(100), || {
        prometheus.value(&down).map(|_| ())
    });
    assert!(
        went_down.is_some(),
        "up never 0 for the killed shard:\n{}",
        prometheus.log()
    );
    let targets_of_killed = format!(r#"mqtt_pulse_targets{{instance="{}"}}"#, instances[1]);
    assert_eq!(
        prometheus.query(&targets_of_killed).unwrap(),
        Vec::<serde_json::Value>::new()
    );
    for other in [0, 2] {
        let alive = format!(r#"up{{instance="{}"}}"#, instances[other]);
        assert_eq!(prometheus.value(&alive), Some(1.0), "shard {other}");
    }
    // The alert's own expression, from alerts.yml, names the shard and its
    // share (it fires after its `for:`, which the promtool test covers).
    let rules = prometheus.api("/api/v1/rules").unwrap();
    let expr = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap().iter())
        .find(|rule| rule["name"] == "MqttPulseShardDown")
        .expect("MqttPulseShardDown loaded")["query"]
        .as_str()
        .unwrap()
        .to_owned();
    let named = poll(DEADLINE, Duration::from_millis(100), || {
        let samples = prometheus.query(&expr).ok()?;
        (samples.len() == 1).then(|| samples[0].clone())
    })
    .unwrap_or_else(|| panic!("{expr} never named the killed shard"));
    assert_eq!(named["metric"]["shard_index"], "1", "{named}");
    assert_eq!(named["metric"]["shard_count"], "3", "{named}");
    assert_eq!(named["value"][1], shares[1].to_string(), "{named}");
    let pending = poll(DEADLINE, Duration::from_millis(100), || {
        prometheus
            .value(
                r#"ALERTS{alertname="MqttPulseShardDown", shard_index="1", alertstate="pending"}"#,
            )
            .map(|_| ())
    });
    assert!(pending.is_some(), "MqttPulseShardDown never pending");
    // The sum across shards now lacks exactly the killed shard's share.
    let short = poll(DEADLINE, Duration::from_millis(100), || {
        let sum = prometheus.value("job:mqtt_pulse_targets:sum")? as usize;
        (sum == TARGETS - shares[1]).then_some(())
    });
    assert!(
        short.is_some(),
        "job:mqtt_pulse_targets:sum never lost shard 1's share"
    );
}

#[test]
fn a_fourth_shard_takes_about_a_quarter_of_the_targets_and_moves_nothing_else() {
    // --config.check connects to nothing.
    let dir = TempDir::new("shards-four");
    let config = write_config(&dir, "mqtt://127.0.0.1:9", None);
    let owners = |count: u32| -> BTreeMap<String, u32> {
        let mut owners = BTreeMap::new();
        for index in 0..count {
            for name in owned_by_check(&config, count, index) {
                assert_eq!(
                    owners.insert(name.clone(), index),
                    None,
                    "{name} owned twice"
                );
            }
        }
        assert_eq!(owners.len(), TARGETS, "every target owned, count {count}");
        owners
    };
    let (three, four) = (owners(3), owners(4));
    assert_moved_about_a_quarter(&three, &four);
}

/// From 3 shards to 4: every target that changed owner went to the new shard
/// 3, and about a quarter did — at most 75 plus a margin of two standard
/// deviations of the binomial (7.5 each).
fn assert_moved_about_a_quarter(three: &BTreeMap<String, u32>, four: &BTreeMap<String, u32>) {
    assert_eq!(three.len(), TARGETS);
    assert_eq!(four.len(), TARGETS);
    let mut moved = 0;
    for (name, before) in three {
        let after = four[name];
        if after != *before {
            assert_eq!(after, 3, "{name} moved from shard {before} to {after}");
            moved += 1;
        }
    }
    assert!(
        moved <= TARGETS / 4 + 15,
        "{moved} of {TARGETS} changed owner"
    );
    assert!(
        moved >= TARGETS / 4 - 15,
        "only {moved} of {TARGETS} changed owner"
    );
}

/// The target names a shard pod with `{hostname}` ids runs, from its page.
fn owned_names(metrics: &Metrics, index: u32) -> BTreeSet<String> {
    let prefix = format!("mqtt-pulse-mqtt-pulse-{index}-");
    client_ids(metrics)
        .iter()
        .map(|id| {
            id.strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{id} is not a client id of pod {index}"))
                .to_owned()
        })
        .collect()
}

/// No client of `daemon` ever went down or failed: nobody took its session over.
fn assert_never_kicked(daemon: &Daemon, what: &str) {
    let metrics = daemon.metrics();
    for id in client_ids(&metrics) {
        assert_eq!(metrics.up(&id), Some(1.0), "{what}: {id}");
        assert_eq!(
            metrics.status_changes(&id, "down"),
            Some(0.0),
            "{what}: {id} went down"
        );
        assert_eq!(metrics.connect_failures(&id), vec![], "{what}: {id} failed");
    }
}

#[test]
fn a_resharding_rollout_overlaps_old_and_new_shards_without_kicks() {
    let broker = Broker::builder().quiet().start();
    let dir = TempDir::new("shards-rollout");
    let config = write_config(&dir, &broker.url(), Some(PER_HOST_ID));
    // A StatefulSet of 3 pods, then --shard.count 4 and 4 replicas: pod 3 starts
    // first, then pods 2, 1, 0 are replaced one by one. Until its turn, each
    // old pod still watches targets that a new one watches too.
    let mut old: Vec<Option<Daemon>> = (0..3).map(|i| Some(pod(&dir, &config, 3, i))).collect();
    let mut before = BTreeMap::new();
    for (index, daemon) in (0u32..).zip(&old) {
        let daemon = daemon.as_ref().unwrap();
        let owned = owned_by_check(&config, 3, index);
        let metrics = all_up(daemon, owned.len());
        assert_eq!(
            owned_names(&metrics, index),
            owned.iter().cloned().collect()
        );
        before.extend(owned.into_iter().map(|name| (name, index)));
    }
    let mut new: BTreeMap<u32, Daemon> = BTreeMap::new();
    for index in [3, 2, 1, 0] {
        if let Some(mut replaced) = old.get_mut(index as usize).and_then(Option::take) {
            // Every connection of the old pod survived the overlap so far.
            assert_never_kicked(&replaced, &format!("old pod {index}"));
            assert_eq!(replaced.terminate(SHUTDOWN).code(), Some(0));
        }
        let daemon = pod(&dir, &config, 4, index);
        all_up(&daemon, owned_by_check(&config, 4, index).len());
        new.insert(index, daemon);
    }
    // The overlap lasted while the new pods connected: old and new both up,
    // nobody kicked, in every pod still running.
    let mut after = BTreeMap::new();
    for (index, daemon) in &new {
        assert_never_kicked(daemon, &format!("new pod {index}"));
        for name in owned_names(&daemon.metrics(), *index) {
            assert_eq!(
                after.insert(name.clone(), *index),
                None,
                "{name} watched twice"
            );
        }
    }
    assert_moved_about_a_quarter(&before, &after);
    for (_, mut daemon) in new {
        assert_eq!(daemon.terminate(SHUTDOWN).code(), Some(0));
    }
}

#[test]
fn the_same_client_ids_in_overlapping_shards_kick_each_other_and_are_warned_about() {
    // The gap `{hostname}` closes: default ids are the same in every replica.
    let broker = Broker::start();
    let dir = TempDir::new("shards-same-ids");
    // A target shard 0 of 1... is every target; shard 1 of 2 owns this one too.
    let name = (0..)
        .map(|i| format!("meter-{i:03}"))
        .find(|name| Shard::owner(name, 2) == 1)
        .unwrap();
    let config = dir.join("mqtt-pulse.toml");
    fs::write(
        &config,
        format!(
            "[[target]]\nname = \"{name}\"\nurl = \"{}\"\nkeep_alive = \"1s\"\n",
            broker.url()
        ),
    )
    .unwrap();
    let file = config.to_str().unwrap();
    let id = format!("mqtt-pulse-{name}");
    let old = Daemon::start(&dir, &["--config.file", file], ready);
    old.wait_for_metrics("up", |m| m.up(&id) == Some(1.0));
    let new = Daemon::start(
        &dir,
        &[
            "--config.file",
            file,
            "--shard.count",
            "2",
            "--shard.index",
            "1",
        ],
        ready,
    );
    // The broker closes the older session for the newer one: a kick.
    broker.wait_for_log("already connected, closing old connection", DEADLINE);
    let warned = wait_until(DEADLINE, || new.stderr().contains("{hostname}"));
    assert!(
        warned,
        "no warning about shared client ids:\n{}",
        new.stderr()
    );
    let line = new
        .stderr()
        .lines()
        .find(|l| l.contains("{hostname}"))
        .unwrap()
        .to_owned();
    assert!(line.contains("level=warn"), "{line}");
    assert!(line.contains("1 of the 1 targets"), "{line}");
    assert!(
        line.contains(r#"client_id = \"mqtt-pulse-{hostname}-{name}\""#),
        "{line}"
    );
    assert!(
        !old.stderr().contains("{hostname}"),
        "an unsharded daemon is not warned"
    );
    // --config.check with the shard flags says the same; not with the recipe.
    let check = |file: &str| {
        let args = [
            "--config.check",
            "--config.file",
            file,
            "--shard.count",
            "2",
            "--shard.index",
            "1",
        ];
        let output = daemon::run(&args);
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stderr)
    };
    let stderr = check(file);
    assert!(
        stderr
            .starts_with("1 of the 1 targets this shard owns have a client id without {hostname}"),
        "{stderr}"
    );
    let recipe = dir.join("recipe.toml");
    let written = fs::read_to_string(&config).unwrap();
    fs::write(
        &recipe,
        format!("[defaults]\nclient_id = \"{PER_HOST_ID}\"\n{written}"),
    )
    .unwrap();
    assert_eq!(check(recipe.to_str().unwrap()), "");
}

#[test]
fn a_reload_keeps_the_shard_and_stops_a_target_that_leaves_it() {
    let broker = Broker::start();
    let dir = TempDir::new("shards-reload");
    let config = dir.join("mqtt-pulse.toml");
    // Names shard 0 of 2 owns, and one it does not.
    let mut candidates = (0..).map(|i| format!("meter-{i:03}"));
    let mut owned_by = |index| {
        candidates
            .by_ref()
            .find(|n| Shard::owner(n, 2) == index)
            .unwrap()
    };
    let (kept, added, other, renamed) = (owned_by(0), owned_by(0), owned_by(1), owned_by(1));
    let target = |name: &str| {
        format!(
            "[[target]]\nname = \"{name}\"\nurl = \"{}\"\n",
            broker.url()
        )
    };
    fs::write(&config, [target(&kept), target(&other)].concat()).unwrap();
    let file = config.to_str().unwrap();
    let shard = Daemon::start(
        &dir,
        &[
            "--config.file",
            file,
            "--shard.count",
            "2",
            "--shard.index",
            "0",
        ],
        ready,
    );
    let id = |name: &str| format!("mqtt-pulse-{name}");
    let targets = [("shard_index", "0"), ("shard_count", "2")];
    shard.wait_for_metrics("the owned target up", |m| {
        m.up(&id(&kept)) == Some(1.0) && m.value("mqtt_pulse_targets", &targets) == Some(1.0)
    });
    assert!(!shard.metrics().has_client(&id(&other)));

    // Added: one owned, one not. Then `kept` renamed to a name shard 1 owns.
    fs::write(
        &config,
        [target(&kept), target(&other), target(&added)].concat(),
    )
    .unwrap();
    let answer = shard.request("POST", "/-/reload");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let metrics = shard.wait_for_metrics("the added owned target up", |m| {
        m.up(&id(&added)) == Some(1.0) && m.value("mqtt_pulse_targets", &targets) == Some(2.0)
    });
    assert!(!metrics.has_client(&id(&other)));
    fs::write(
        &config,
        [target(&renamed), target(&other), target(&added)].concat(),
    )
    .unwrap();
    let answer = shard.request("POST", "/-/reload");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body.contains(&format!("removed [\"{kept}\"]")),
        "{}",
        answer.body
    );
    let metrics = shard.wait_for_metrics("the renamed target gone", |m| {
        !m.has_client(&id(&kept)) && m.value("mqtt_pulse_targets", &targets) == Some(1.0)
    });
    assert!(
        !metrics.has_client(&id(&renamed)),
        "shard 1's target started here"
    );
    assert_eq!(metrics.up(&id(&added)), Some(1.0));
}

#[test]
fn ready_waits_for_every_owned_target_to_finish_a_first_attempt() {
    let answering = Broker::start();
    // A real broker, stopped (SIGSTOP): the kernel completes TCP, nothing answers.
    let silent = Broker::start();
    silent.pause();
    let dir = TempDir::new("shards-ready");
    let config = dir.join("mqtt-pulse.toml");
    fs::write(
        &config,
        format!(
            "[defaults]\nconnect_timeout = \"2s\"\n\
             [[target]]\nname = \"answering\"\nurl = \"{}\"\n\
             [[target]]\nname = \"silent\"\nurl = \"{}\"\n",
            answering.url(),
            silent.url()
        ),
    )
    .unwrap();
    let healthy =
        |port| support::http::fetch(port, "GET", "/-/healthy").is_ok_and(|r| r.status == 200);
    let daemon = Daemon::start(&dir, &["--config.file", config.to_str().unwrap()], healthy);
    daemon.wait_for_metrics("answering up", |m| {
        m.up("mqtt-pulse-answering") == Some(1.0)
    });
    let waiting = daemon.request("GET", "/-/ready");
    assert_eq!(waiting.status, 503, "{}", waiting.body);
    assert_eq!(
        waiting.body,
        "mqtt-pulse is not ready: 1 of the 2 targets this replica owns have not finished a \
         first connect attempt\n"
    );
    // The silent broker's connect times out: attempted, so ready — while it is down.
    let became_ready = wait_until(DEADLINE, || ready(daemon.port()));
    assert!(became_ready, "never ready:\n{}", daemon.stderr());
    let metrics = daemon.metrics();
    assert_eq!(metrics.up("mqtt-pulse-silent"), Some(0.0));
    assert_eq!(
        metrics.connect_failures("mqtt-pulse-silent"),
        vec![("timeout".to_owned(), 1.0)]
    );
    assert_eq!(
        daemon.request("GET", "/-/ready").body,
        "mqtt-pulse is Ready.\n"
    );
    silent.resume();
}

#[test]
fn bad_shard_flags_are_one_line_and_exit_1() {
    /// Arguments, environment, the error line after `mqtt-pulse: `.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 6] = [
        (
            &["--shard.count", "3", "--shard.index", "three"],
            &[],
            "--shard.index \"three\" is neither a whole number nor the word hostname (MQTT_PULSE_SHARD_INDEX)",
        ),
        (
            &["--shard.count", "0"],
            &[],
            "--shard.count \"0\" is not a number of replicas from 1 to 256 (MQTT_PULSE_SHARD_COUNT)",
        ),
        (
            &["--shard.count", "3", "--shard.index", "3"],
            &[],
            "--shard.index 3 is not below --shard.count 3: the indexes of 3 shards are 0 to 2",
        ),
        (
            &[],
            &[
                ("MQTT_PULSE_SHARD_COUNT", "3"),
                ("MQTT_PULSE_SHARD_INDEX", ""),
            ],
            // The downward API's value for a pod label that does not exist.
            "--shard.index is empty (MQTT_PULSE_SHARD_INDEX=\"\"; Kubernetes before 1.28 has no pod \
             label apps.kubernetes.io/pod-index to take it from): give a whole number, or hostname \
             for the StatefulSet pod's ordinal",
        ),
        (
            &["--shard.count", "3", "--shard.index", "hostname"],
            &[("HOSTNAME", "web")],
            "--shard.index hostname: the host name \"web\" does not end in -<number> (a StatefulSet \
             pod's ordinal, as in mqtt-pulse-2); set HOSTNAME or give the index as a number",
        ),
        (
            &["--shard.count", "3", "--shard.index", "hostname"],
            &[("HOSTNAME", "mqtt-pulse-3")],
            "--shard.index 3 is not below --shard.count 3: the indexes of 3 shards are 0 to 2",
        ),
    ];
    for (args, env, expected) in cases {
        for check in [true, false] {
            let mut command = assert_cmd::Command::from_std(daemon::command());
            if check {
                command.arg("--config.check");
            }
            command
                .args(args)
                .envs(env.iter().copied())
                .timeout(daemon::ONE_SHOT_TIMEOUT);
            let output = command.output().unwrap();
            daemon::assert_fails_with_one_line(
                &output,
                &format!("mqtt-pulse: {expected}"),
                &format!("{args:?} {env:?} check={check}"),
            );
        }
    }
}

#[test]
fn a_shared_file_may_hold_more_targets_than_one_process_watches() {
    use mqtt_pulse::config::MAX_TARGETS;
    let dir = TempDir::new("shards-big");
    let config = dir.join("mqtt-pulse.toml");
    let mut targets = String::new();
    for i in 0..=MAX_TARGETS {
        write!(
            targets,
            "[[target]]\nname = \"t{i:05}\"\nurl = \"mqtt://127.0.0.1:9\"\n"
        )
        .unwrap();
    }
    fs::write(&config, targets).unwrap();
    let file = config.to_str().unwrap();
    let too_many = format!(
        "mqtt-pulse: {file}: {} targets for shard 0 of 1 (indexes from 0); one mqtt-pulse \
         process watches at most {MAX_TARGETS}: share them over more replicas with --shard.count",
        MAX_TARGETS + 1
    );
    for args in [
        vec!["--config.check", "--config.file", file],
        vec!["--config.file", file, "--web.listen-address", "127.0.0.1:0"],
    ] {
        daemon::assert_fails_with_one_line(&daemon::run(&args), &too_many, &format!("{args:?}"));
    }
    // Two shards: each owns about half, within the limit.
    let halves: usize = (0..2)
        .map(|index| {
            let owned: usize = (0..=MAX_TARGETS)
                .filter(|i| Shard::owner(&format!("t{i:05}"), 2) == index)
                .count();
            let output = daemon::run(&[
                "--config.check",
                "--config.file",
                file,
                "--shard.count",
                "2",
                "--shard.index",
                &index.to_string(),
            ]);
            let stdout = text(&output.stdout);
            assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
            assert!(
                stdout.contains(&format!(" owns {owned} (t")),
                "{}",
                &stdout[..200]
            );
            owned
        })
        .sum();
    assert_eq!(halves, MAX_TARGETS + 1);
}

/// Targets joined by `[[path]]`s go to one shard together (the owner of the
/// group's least name), so every path runs, in exactly one shard, with both
/// ends. Owning targets one by one would split most paths between two
/// replicas, and such a path would run nowhere.
#[test]
fn the_two_ends_of_every_path_are_owned_by_one_shard_which_runs_the_path() {
    let dir = TempDir::new("shards-paths");
    let mut config = String::new();
    for i in 0..30 {
        write!(
            config,
            "[[target]]\nname = \"t-{i:02}\"\nurl = \"mqtt://127.0.0.1:9\"\n"
        )
        .unwrap();
    }
    // Chains of three and pairs, so that groups are larger than one path.
    let mut paths = Vec::new();
    for i in (0..30).step_by(5) {
        paths.push((format!("t-{:02}", i), format!("t-{:02}", i + 2)));
        paths.push((format!("t-{:02}", i + 2), format!("t-{:02}", i + 4)));
    }
    for (from, to) in &paths {
        write!(config, "[[path]]\nfrom = \"{from}\"\nto = \"{to}\"\n").unwrap();
    }
    let file = dir.join("paths.toml");
    fs::write(&file, config).unwrap();

    let count = 3;
    let mut owner_of = BTreeMap::new();
    let mut path_runs = BTreeMap::new();
    for index in 0..count {
        let output = daemon::run(&[
            "--config.check",
            "--config.file",
            file.to_str().unwrap(),
            "--shard.count",
            &count.to_string(),
            "--shard.index",
            &index.to_string(),
        ]);
        let stdout = text(&output.stdout);
        assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
        let line = stdout.trim_end();
        let (_, owned) = line.split_once(" owns ").unwrap();
        let (_, rest) = owned.split_once(" (").unwrap();
        let (targets, rest) = rest.split_once(')').unwrap();
        for name in targets.split(", ").filter(|n| !n.is_empty()) {
            assert_eq!(
                owner_of.insert(name.to_owned(), index),
                None,
                "{name} twice"
            );
        }
        if let Some((_, names)) = rest.split_once(" (") {
            for name in names.trim_end_matches(')').split(", ") {
                assert_eq!(
                    path_runs.insert(name.to_owned(), index),
                    None,
                    "{name} twice"
                );
            }
        }
    }
    assert_eq!(owner_of.len(), 30, "every target owned once");
    assert_eq!(
        path_runs.len(),
        paths.len(),
        "every path runs: {path_runs:?}"
    );
    for (from, to) in &paths {
        let shard = path_runs[&format!("{from}->{to}")];
        assert_eq!(owner_of[from], shard, "{from} runs where its path does");
        assert_eq!(owner_of[to], shard, "{to} runs where its path does");
    }
    let used: BTreeSet<u32> = owner_of.values().copied().collect();
    assert!(
        used.len() > 1,
        "groups still spread over shards: {owner_of:?}"
    );
}
