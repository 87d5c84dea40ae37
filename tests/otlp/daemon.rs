//! The daemon: `[otlp]` from the file and the environment, the flush on
//! SIGTERM, and a reload that changes `[otlp]`.

use std::time::{Duration, SystemTime};

use mqtt_pulse::exporter::otlp::OtlpProtocol;
use nix::sys::signal::Signal;

use crate::support::daemon::Daemon;
use crate::support::http::ready;
use crate::support::{Broker, TempDir, wait_until};
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, metric};

use crate::{
    Collector, DEADLINE, Push, SECRET, changes, metrics, nanos, number, resource, rtt, up, up_point,
};

/// The daemon serving `config` (written as `mqtt-pulse.toml` in `dir`) with
/// `env` set, once it is ready; started off the runtime (it blocks meanwhile).
fn start_daemon(dir: &TempDir, config: &str, env: &[(&str, &str)]) -> Daemon {
    let path = dir.join("mqtt-pulse.toml");
    std::fs::write(&path, config).unwrap();
    tokio::task::block_in_place(|| {
        Daemon::start_with_env(dir, &["--config.file", path.to_str().unwrap()], env, ready)
    })
}

fn daemon_config(broker: &Broker, otlp: &str) -> String {
    format!(
        "[[target]]\nname = \"otlp\"\nurl = \"{}\"\nkeep_alive = \"1s\"\n{otlp}",
        broker.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_pushes_to_the_files_collector_over_the_environments_and_flushes_on_sigterm() {
    let broker = Broker::start();
    let mut from_file = Collector::start(OtlpProtocol::Grpc).await;
    let mut from_env = Collector::start(OtlpProtocol::Grpc).await;
    let config = daemon_config(
        &broker,
        &format!(
            "[otlp]\nendpoint = \"{}\"\nprotocol = \"grpc\"\ninterval = \"300ms\"\n",
            from_file.endpoint()
        ),
    );
    let dir = TempDir::new("otlp-daemon");
    let mut daemon = start_daemon(
        &dir,
        &config,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &from_env.endpoint()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        ],
    );
    let push = from_file
        .until(DEADLINE, |push| up(push, "mqtt-pulse-otlp") == Some(1))
        .await;
    assert_eq!(
        resource(&push, "service.name").as_deref(),
        Some("mqtt-pulse")
    );
    let logs = daemon.stderr();
    assert!(
        logs.lines().any(|l| l.contains("pushing metrics over OTLP")
            && l.contains(&from_file.endpoint())
            && l.contains("300ms")),
        "{logs}"
    );
    // A few more pushes to the file's collector, none to the environment's.
    from_file.next(DEADLINE).await;
    from_file.next(DEADLINE).await;
    assert!(from_env.received_nothing(), "the file's endpoint wins");

    let before = nanos(SystemTime::now());
    let status = tokio::task::spawn_blocking(move || daemon.terminate(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(status.success(), "the daemon exited with {status}");
    let mut last = None;
    while let Ok(push) = from_file.pushes.try_recv() {
        last = Some(push);
    }
    let last = last.expect("a push after SIGTERM");
    let point = up_point(&last, "mqtt-pulse-otlp").expect("the target in the last push");
    assert!(
        point.time_unix_nano >= before,
        "the last push was collected at shutdown"
    );
    assert_eq!(
        number(point),
        1,
        "collected before the daemon's own disconnect"
    );
    assert!(from_env.received_nothing());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_pushes_over_http_when_only_the_environment_asks() {
    let broker = Broker::start();
    let mut collector = Collector::start(OtlpProtocol::HttpProtobuf).await;
    let dir = TempDir::new("otlp-daemon");
    let daemon = start_daemon(
        &dir,
        &daemon_config(&broker, ""),
        &[
            // A base URL: the daemon appends /v1/metrics, where the collector listens.
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
            ("OTEL_EXPORTER_OTLP_HEADERS", &format!("x-api-key={SECRET}")),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
        ],
    );
    let push = collector
        .until(DEADLINE, |push| up(push, "mqtt-pulse-otlp") == Some(1))
        .await;
    assert_eq!(
        resource(&push, "deployment.environment").as_deref(),
        Some("test")
    );
    assert!(
        push.headers
            .contains(&("x-api-key".to_owned(), SECRET.to_owned()))
    );
    let logs = daemon.stderr();
    assert!(
        logs.contains(&format!("{}/v1/metrics", collector.endpoint())),
        "{logs}"
    );
    assert!(!logs.contains(SECRET), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_otlp_asks_for_a_restart_and_keeps_pushing_where_it_did() {
    let broker = Broker::start();
    let mut first = Collector::start(OtlpProtocol::Grpc).await;
    let mut second = Collector::start(OtlpProtocol::Grpc).await;
    let otlp = |collector: &Collector| {
        format!(
            "[otlp]\nendpoint = \"{}\"\ninterval = \"200ms\"\n",
            collector.endpoint()
        )
    };
    let dir = TempDir::new("otlp-daemon");
    let daemon = start_daemon(&dir, &daemon_config(&broker, &otlp(&first)), &[]);
    first
        .until(DEADLINE, |push| up(push, "mqtt-pulse-otlp") == Some(1))
        .await;

    std::fs::write(
        dir.join("mqtt-pulse.toml"),
        daemon_config(&broker, &otlp(&second)),
    )
    .unwrap();
    daemon.signal(Signal::SIGHUP);
    let reloaded = wait_until(DEADLINE, || daemon.stderr().contains("config reloaded"));
    let logs = daemon.stderr();
    assert!(reloaded, "{logs}");
    let line = logs
        .lines()
        .find(|l| l.contains("[otlp] table changed"))
        .unwrap_or_else(|| panic!("no restart hint in {logs}"));
    assert!(
        line.contains("restarted") && line.to_lowercase().contains("warn"),
        "{line}"
    );
    // Pushes keep going to the first collector after the reload.
    while first.pushes.try_recv().is_ok() {}
    first.next(DEADLINE).await;
    first.next(DEADLINE).await;
    assert!(second.received_nothing(), "the new [otlp] needs a restart");
}

/// The aggregation temporality `name` was pushed with (sums and histograms).
fn temporality(push: &Push, name: &str) -> Option<AggregationTemporality> {
    metrics(push, name).find_map(|metric| {
        let value = match &metric.data {
            Some(metric::Data::Sum(sum)) => sum.aggregation_temporality,
            Some(metric::Data::Histogram(histogram)) => histogram.aggregation_temporality,
            _ => return None,
        };
        AggregationTemporality::try_from(value).ok()
    })
}

/// Guards delta temporality through the daemon: with
/// `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta` the SDK's
/// choice reaches the wire through mqtt-pulse's counting wrapper around the
/// exporter: `status.changes` and `ping.rtt` arrive as deltas, and a push
/// after the one that carried the connect no longer counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_temporality_from_the_environment_reaches_the_collector() {
    let broker = Broker::start();
    let mut collector = Collector::start(OtlpProtocol::Grpc).await;
    let dir = TempDir::new("otlp-daemon-delta");
    let _daemon = start_daemon(
        &dir,
        &daemon_config(&broker, ""),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta"),
        ],
    );
    let connected = collector
        .until(DEADLINE, |push| {
            changes(push, "mqtt-pulse-otlp", "up") == Some(1)
        })
        .await;
    assert_eq!(
        temporality(&connected, "mqtt.client.status.changes"),
        Some(AggregationTemporality::Delta)
    );
    // Keep-alive 1 s: a round trip every 750 ms, in some push.
    let pinged = collector
        .until(DEADLINE, |push| rtt(push, "mqtt-pulse-otlp").is_some())
        .await;
    assert_eq!(
        temporality(&pinged, "mqtt.client.ping.rtt"),
        Some(AggregationTemporality::Delta)
    );
    // The connect was counted once, in its own interval's push.
    let later = collector.next(DEADLINE).await;
    assert!(
        matches!(changes(&later, "mqtt-pulse-otlp", "up"), None | Some(0)),
        "{:?}",
        changes(&later, "mqtt-pulse-otlp", "up")
    );
}

/// Guards `OTEL_SDK_DISABLED=true` through the daemon: the
/// `OTEL_EXPORTER_OTLP_*` variables alone then start no exporter (what
/// `configured_by_env` promises; without the variable the same environment
/// pushes, see `the_daemon_pushes_over_http_when_only_the_environment_asks`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_sdk_disabled_keeps_the_environments_exporter_off() {
    let broker = Broker::start();
    let mut collector = Collector::start(OtlpProtocol::Grpc).await;
    let dir = TempDir::new("otlp-daemon-disabled");
    let daemon = start_daemon(
        &dir,
        &daemon_config(&broker, ""),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
            ("OTEL_SDK_DISABLED", "true"),
        ],
    );
    let page = tokio::task::block_in_place(|| {
        daemon.wait_for_metrics("the target up", |m| m.up("mqtt-pulse-otlp") == Some(1.0))
    });
    // Ten push intervals and more.
    collector
        .nothing_within(Duration::from_secs(2), "OTEL_SDK_DISABLED=true")
        .await;
    let logs = daemon.stderr();
    assert!(!logs.contains("pushing metrics over OTLP"), "{logs}");
    assert!(!page.text.contains("mqtt_pulse_otlp_"), "{}", page.text);
}
