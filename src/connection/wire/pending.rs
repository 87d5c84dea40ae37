//! [`Pending`]: rumqttc's queue of pending requests (`EventLoop::pending`,
//! written by the next polls ahead of what the client handle sends), of
//! either protocol version, as round-trip probes and paths use it: they
//! queue a SUBSCRIBE, an UNSUBSCRIBE or a PUBLISH, and ask whether one of
//! theirs is still waiting. It owns the shape of those requests in each
//! version (an MQTT 5 one carries no properties); it must never reorder,
//! drop or look into anything else in the queue.

use std::collections::VecDeque;

use rumqttc::v5::mqttbytes::v5 as packets5;
use rumqttc::{Publish, QoS, Request, Subscribe, Unsubscribe};

/// A pending-request queue of either rumqttc event loop.
pub(crate) trait Pending {
    /// Queues a SUBSCRIBE to `topic`.
    fn push_subscribe(&mut self, topic: &str, qos: QoS);
    /// Queues an UNSUBSCRIBE from `topic`.
    fn push_unsubscribe(&mut self, topic: &str);
    /// Queues `publish` (given in its 3.1.1 shape: topic, QoS, payload,
    /// retain flag).
    fn push_publish(&mut self, publish: Publish);
    /// Whether a SUBSCRIBE to `topic` is still waiting to be written.
    fn has_subscribe(&self, topic: &str) -> bool;
    /// Whether a PUBLISH to `topic` whose payload `matches` is still waiting
    /// to be written.
    fn has_publish(&self, topic: &str, matches: &dyn Fn(&[u8]) -> bool) -> bool;
}

impl Pending for VecDeque<Request> {
    fn push_subscribe(&mut self, topic: &str, qos: QoS) {
        self.push_back(Request::Subscribe(Subscribe::new(topic, qos)));
    }

    fn push_unsubscribe(&mut self, topic: &str) {
        self.push_back(Request::Unsubscribe(Unsubscribe::new(topic)));
    }

    fn push_publish(&mut self, publish: Publish) {
        self.push_back(Request::Publish(publish));
    }

    fn has_subscribe(&self, topic: &str) -> bool {
        self.iter().any(|request| {
            matches!(request, Request::Subscribe(subscribe)
                if subscribe.filters.iter().any(|filter| filter.path == topic))
        })
    }

    fn has_publish(&self, topic: &str, matches: &dyn Fn(&[u8]) -> bool) -> bool {
        self.iter().any(|request| {
            matches!(request, Request::Publish(publish)
                if publish.topic == topic && matches(&publish.payload))
        })
    }
}

impl Pending for VecDeque<rumqttc::v5::Request> {
    fn push_subscribe(&mut self, topic: &str, qos: QoS) {
        let filter = packets5::Filter::new(topic, super::v5::qos(qos));
        self.push_back(rumqttc::v5::Request::Subscribe(packets5::Subscribe::new(
            filter, None,
        )));
    }

    fn push_unsubscribe(&mut self, topic: &str) {
        self.push_back(rumqttc::v5::Request::Unsubscribe(
            packets5::Unsubscribe::new(topic, None),
        ));
    }

    fn push_publish(&mut self, publish: Publish) {
        let mut shaped = packets5::Publish::new(
            publish.topic,
            super::v5::qos(publish.qos),
            publish.payload,
            None,
        );
        shaped.retain = publish.retain;
        self.push_back(rumqttc::v5::Request::Publish(shaped));
    }

    fn has_subscribe(&self, topic: &str) -> bool {
        self.iter().any(|request| {
            matches!(request, rumqttc::v5::Request::Subscribe(subscribe)
                if subscribe.filters.iter().any(|filter| filter.path == topic))
        })
    }

    fn has_publish(&self, topic: &str, matches: &dyn Fn(&[u8]) -> bool) -> bool {
        self.iter().any(|request| {
            matches!(request, rumqttc::v5::Request::Publish(publish)
                if publish.topic == topic.as_bytes() && matches(&publish.payload))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both queues answer alike for what was pushed, and for nothing else.
    fn exercise(queue: &mut dyn Pending) {
        queue.push_subscribe("a/b", QoS::AtLeastOnce);
        let mut publish = Publish::new("a/b", QoS::AtMostOnce, b"seq-7".to_vec());
        publish.retain = false;
        queue.push_publish(publish);
        queue.push_unsubscribe("c");
        assert!(queue.has_subscribe("a/b"));
        assert!(!queue.has_subscribe("c"), "an UNSUBSCRIBE is no SUBSCRIBE");
        assert!(queue.has_publish("a/b", &|payload| payload == b"seq-7"));
        assert!(!queue.has_publish("a/b", &|payload| payload == b"seq-8"));
        assert!(!queue.has_publish("a/c", &|_| true));
    }

    #[test]
    fn both_versions_queue_and_find_the_same_requests() {
        let mut v311: VecDeque<Request> = VecDeque::new();
        exercise(&mut v311);
        assert_eq!(v311.len(), 3);

        let mut v5: VecDeque<rumqttc::v5::Request> = VecDeque::new();
        exercise(&mut v5);
        assert!(matches!(&v5[0], rumqttc::v5::Request::Subscribe(s)
            if s.filters[0].path == "a/b" && s.filters[0].qos == rumqttc::v5::mqttbytes::QoS::AtLeastOnce));
        assert!(matches!(&v5[1], rumqttc::v5::Request::Publish(p)
            if p.topic == "a/b".as_bytes() && !p.retain && p.properties.is_none()));
        assert!(matches!(&v5[2], rumqttc::v5::Request::Unsubscribe(u) if u.filters == ["c"]));
    }
}
