//! Shutdown, dropping the last handle and `flush` each push what is pending.

use std::time::Duration;

use mqtt_pulse::events::{ClientId, ClientInfo, Event, Events, Status};
use mqtt_pulse::exporter::otlp::{OtlpError, OtlpProtocol};

use crate::{Collector, changes, exporter, rtt, string, up, up_point};

/// On a current-thread runtime, where the SDK's own blocking shutdown would
/// stall the gRPC channel it needs.
#[tokio::test(flavor = "current_thread")]
async fn shutdown_pushes_a_status_change_dispatched_just_before_it() {
    let mut collector = Collector::start(OtlpProtocol::Grpc).await;
    let events = Events::new();
    let otlp = exporter(&events, &collector.endpoint(), OtlpProtocol::Grpc)
        .with_interval(Duration::from_secs(3600))
        .install()
        .unwrap();
    let plant = ClientId::from("plant-last");
    events.announce(&plant, ClientInfo::new("broker.test:1883"));
    events.dispatch(&plant, Event::Status(Status::Up));
    events.dispatch(&plant, Event::PingResponse(Duration::from_micros(300)));
    events.dispatch(&plant, Event::Status(Status::Down));

    otlp.shutdown().await.unwrap();
    let push = collector.next(Duration::from_secs(5)).await;
    assert_eq!(up(&push, "plant-last"), Some(0));
    assert_eq!(changes(&push, "plant-last", "down"), Some(1));
    assert_eq!(changes(&push, "plant-last", "up"), Some(1));
    assert_eq!(rtt(&push, "plant-last").unwrap().count, 1);
    assert_eq!(otlp.stats().exports, 1);

    otlp.shutdown()
        .await
        .expect("a second shutdown does nothing");
    assert!(matches!(otlp.flush().await, Err(OtlpError::ShutDown)));
    assert!(collector.received_nothing(), "no push after the shutdown");
}

/// Guards "a clone keeps the OTLP exporter running": dropping one handle
/// while a clone lives neither stops the exporter (the clone still flushes)
/// nor pushes a last batch (nothing arrives within a deadline after the
/// flush); dropping the last handle does push one, with what happened since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_still_pushes_the_last_batch() {
    let mut collector = Collector::start(OtlpProtocol::HttpProtobuf).await;
    let events = Events::new();
    let otlp = exporter(&events, &collector.endpoint(), OtlpProtocol::HttpProtobuf)
        .with_interval(Duration::from_secs(3600))
        .install()
        .unwrap();
    let plant = ClientId::from("plant-dropped");
    events.dispatch(&plant, Event::Status(Status::Up));
    let clone = otlp.clone();
    drop(otlp);

    clone
        .flush()
        .await
        .expect("the clone still runs the exporter");
    let flushed = collector.next(Duration::from_secs(5)).await;
    assert_eq!(up(&flushed, "plant-dropped"), Some(1));
    // A shutdown started by the first drop would push within the SDK's 5 s;
    // 2 s is far above a loopback push (a few ms) on a loaded runner too.
    collector
        .nothing_within(Duration::from_secs(2), "one of two handles was dropped")
        .await;
    assert_eq!(clone.stats().exports, 1, "{:?}", clone.stats());

    events.dispatch(&plant, Event::Status(Status::Down));
    drop(clone);
    let last = collector.next(Duration::from_secs(5)).await;
    assert_eq!(
        up(&last, "plant-dropped"),
        Some(0),
        "the last batch is the latest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_pushes_now_and_a_terminated_client_leaves_up_and_changes() {
    let mut collector = Collector::start(OtlpProtocol::Grpc).await;
    let events = Events::new();
    let otlp = exporter(&events, &collector.endpoint(), OtlpProtocol::Grpc)
        .with_interval(Duration::from_secs(3600))
        .install()
        .unwrap();
    let (gone, kept) = (ClientId::from("gone"), ClientId::from("kept"));
    for id in [&gone, &kept] {
        events.announce(id, ClientInfo::new("[::1]:1883"));
        events.dispatch(id, Event::Status(Status::Up));
    }
    otlp.flush().await.unwrap();
    let push = collector.next(Duration::from_secs(5)).await;
    assert_eq!(up(&push, "gone"), Some(1));
    assert_eq!(
        string(
            &up_point(&push, "gone").unwrap().attributes,
            "server.address"
        ),
        Some("::1")
    );

    events.dispatch(&gone, Event::Status(Status::Terminating));
    events.dispatch(&gone, Event::Status(Status::Terminated));
    otlp.flush().await.unwrap();
    let push = collector.next(Duration::from_secs(5)).await;
    assert_eq!(up(&push, "gone"), None);
    assert_eq!(changes(&push, "gone", "up"), None);
    assert_eq!(up(&push, "kept"), Some(1));
    assert_eq!(changes(&push, "kept", "up"), Some(1));
    otlp.shutdown().await.unwrap();
}
