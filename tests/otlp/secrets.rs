//! Logs and secrets: failed pushes logged once per interval with a count,
//! setting errors naming the problem, never a header value.

use std::time::Duration;

use mqtt_pulse::events::{ClientId, Event, Events, Status};
use mqtt_pulse::exporter::otlp::{OtlpBuilder, OtlpError, OtlpProtocol};

use crate::support::{free_port, logs};
use crate::{Collector, DEADLINE, SECRET, exporter, wait_for_stats};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pushes_are_logged_once_per_interval_with_a_count_and_never_with_a_header_value() {
    let logs = logs::capture_process();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let events = Events::new();
    let otlp = exporter(&events, &endpoint, OtlpProtocol::HttpProtobuf)
        .with_interval(Duration::from_millis(100))
        .with_failure_log_interval(Duration::from_secs(3600))
        .install()
        .unwrap();
    events.dispatch(&ClientId::from("plant-logged"), Event::Status(Status::Up));

    wait_for_stats(&otlp, DEADLINE, |s| s.failures >= 3).await;
    let ours = |logs: &logs::Logs| -> Vec<String> {
        logs.text()
            .lines()
            .filter(|line| line.contains(&format!("127.0.0.1:{port}/v1/metrics")))
            .map(str::to_owned)
            .collect()
    };
    let lines = ours(&logs);
    let warnings: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("OTLP export failed"))
        .collect();
    assert_eq!(warnings.len(), 1, "{lines:#?}");
    assert!(
        warnings[0].contains("WARN") && warnings[0].contains("failed_exports=1"),
        "{}",
        warnings[0]
    );

    let _collector = Collector::start_on(OtlpProtocol::HttpProtobuf, port).await;
    wait_for_stats(&otlp, DEADLINE, |s| s.exports >= 1).await;
    let failures = otlp.stats().failures;
    let lines = ours(&logs);
    let recovered: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("succeeded again"))
        .collect();
    assert_eq!(recovered.len(), 1, "{lines:#?}");
    assert!(
        recovered[0].contains(&format!("failed_exports={failures}")),
        "{} (failures {failures})",
        recovered[0]
    );

    let debug = format!("{otlp:?}");
    assert!(debug.contains(&endpoint), "{debug}");
    otlp.shutdown().await.unwrap();
    let everything = logs.text();
    assert!(!everything.contains(SECRET), "a header value was logged");
    assert!(!debug.contains(SECRET), "{debug}");
}

#[tokio::test]
async fn setting_errors_name_the_problem_and_never_the_header_value() {
    let events = Events::new();
    let bad_header = OtlpBuilder::new(&events)
        .with_endpoint("http://127.0.0.1:9")
        .with_protocol(OtlpProtocol::HttpProtobuf)
        .with_header("x-api-key", format!("{SECRET}\n"))
        .build()
        .err()
        .unwrap();
    assert!(
        matches!(bad_header, OtlpError::Header { .. }),
        "{bad_header}"
    );
    assert!(bad_header.to_string().contains("x-api-key"));
    assert!(!bad_header.to_string().contains(SECRET));
    assert!(!format!("{bad_header:?}").contains(SECRET));

    let https = OtlpBuilder::new(&events)
        .with_endpoint("https://collector.example:4317")
        .build()
        .err()
        .unwrap();
    assert!(https.to_string().contains("no TLS support"), "{https}");

    let registry = prometheus::Registry::new();
    // Nothing listens there: the first exporter's pushes (on drop) just fail.
    let unused = format!("http://127.0.0.1:{}", free_port());
    let first = OtlpBuilder::new(&events)
        .with_endpoint(&unused)
        .with_protocol(OtlpProtocol::HttpProtobuf)
        .with_prometheus_registry(registry.clone())
        .install()
        .unwrap();
    let second = OtlpBuilder::new(&events)
        .with_endpoint(&unused)
        .with_protocol(OtlpProtocol::HttpProtobuf)
        .with_prometheus_registry(registry.clone())
        .install()
        .err()
        .unwrap();
    assert!(matches!(second, OtlpError::Register(_)), "{second}");
    assert_eq!(
        registry.gather().len(),
        1,
        "the first exporter's counter only"
    );
    drop(first);
}
