//! Round-trip probes (issue 15) against real Mosquitto brokers: the round
//! trip at QoS 0, 1 and 2, an ACL that denies the probe topic, a broker
//! restart in the middle of probing, and the probe's metrics on `/metrics`.
//!
//! Every test owns its broker (the fixture's Mosquitto on a free port): the
//! machine's shared broker has other clients that would disturb the counts.

mod support;

use std::time::Duration;

use mqtt_pulse::connection::{Connection, ConnectionOptions, ProbeOptions};
use mqtt_pulse::events::{
    ClientFilter, Event, EventKind, Events, Message, RoundTripOutcome, Status, Subscription,
};
use rumqttc::QoS;
use support::Broker;
use tokio::time::timeout;

fn client_id(test: &str) -> String {
    format!("mqtt-pulse-test-probe-{test}-{}", std::process::id())
}

/// The next message, failing the test if none comes within `limit`.
async fn next(sub: &mut Subscription, limit: Duration) -> Message {
    match timeout(limit, sub.recv()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("the hub went away"),
        Err(_) => panic!("no event within {limit:?}"),
    }
}

async fn wait_up(sub: &mut Subscription) {
    loop {
        if next(sub, Duration::from_secs(10)).await.event == Event::Status(Status::Up) {
            return;
        }
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[tokio::test]
async fn round_trips_at_qos_0_1_and_2_come_back_in_order_with_a_loopback_rtt() {
    for (qos, name) in [
        (QoS::AtMostOnce, "qos0"),
        (QoS::AtLeastOnce, "qos1"),
        (QoS::ExactlyOnce, "qos2"),
    ] {
        let broker = Broker::start();
        let events = Events::new();
        let mut sub = events.register(ClientFilter::Any, EventKind::RoundTrip);
        sub.register(ClientFilter::Any, EventKind::Status);
        sub.register(ClientFilter::Any, EventKind::PingResponse);
        let id = client_id(name);
        let probe = ProbeOptions::new()
            .with_interval(Duration::from_millis(50))
            .with_timeout(Duration::from_secs(2))
            .with_qos(qos);
        let options = ConnectionOptions::new(id.as_str(), &broker.url())
            .unwrap()
            .with_keep_alive(Duration::from_secs(1))
            .with_probe(probe);
        let mut connection = Connection::start(options, &events).unwrap();
        let mut publishes = connection.take_publishes().unwrap();
        wait_up(&mut sub).await;

        let (mut rtts, mut pings) = (Vec::new(), Vec::new());
        let mut expected_seq = 1;
        while rtts.len() < 20 || pings.is_empty() {
            let message = next(&mut sub, Duration::from_secs(5)).await;
            match message.event {
                Event::RoundTrip(trip) => {
                    assert_eq!(trip.path, None);
                    assert_eq!(trip.seq, expected_seq, "{name}: in sequence");
                    expected_seq += 1;
                    let RoundTripOutcome::Received(rtt) = trip.outcome else {
                        panic!("{name}: {trip:?}");
                    };
                    rtts.push(rtt);
                }
                Event::PingResponse(rtt) => pings.push(rtt),
                other => panic!("{name}: {other:?}"),
            }
        }
        let (probe_median, ping_median) = (median(rtts.clone()), median(pings));
        assert!(
            probe_median < Duration::from_millis(5),
            "{name}: loopback round trips {rtts:?}"
        );
        assert!(rtts.iter().all(|rtt| *rtt > Duration::ZERO));
        // The probe goes through the broker's routing, the ping does not: a
        // little longer, of the same order on loopback.
        assert!(
            probe_median < ping_median * 10 + Duration::from_millis(1),
            "{name}: probe {probe_median:?} against ping {ping_median:?}"
        );

        let counts = events.round_trips();
        assert_eq!(counts.len(), 1);
        let counts = &counts[0];
        assert_eq!(counts.client_id.as_str(), id);
        assert!(counts.sent >= 20);
        assert_eq!(counts.count(RoundTripOutcome::Lost), 0);
        assert_eq!(counts.count(RoundTripOutcome::Duplicate), 0);
        assert!(counts.last_success.is_some());
        assert!(
            publishes.try_recv().is_err(),
            "{name}: probe messages are not the host's publishes"
        );
        assert_eq!(connection.dropped_publishes(), 0);
        assert!(events.dropped_publishes().is_empty());
        connection.shutdown().await;
        assert!(events.round_trips().is_empty(), "forgotten with the client");
    }
}
