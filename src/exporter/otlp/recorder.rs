//! From hub events to OpenTelemetry measurements: the exporter's wildcard
//! subscription, the ping histogram it records into, the per-client status
//! change counts, and the callbacks the SDK calls at each collection.
//!
//! It owns the subscription and its per-client state. It must never block the
//! hub: events are read from its own queue, on its consumer task or inside a
//! collection (on the SDK's reader thread), never awaited under a lock. It
//! must never panic in a callback: a panic there would end the SDK's reader
//! thread, and with it every later export.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{AsyncInstrument, Histogram};

use crate::events::{
    ClientId, ClientInfo, ClientState, Event, Events, Message, RoundTrip, RoundTripCounts,
    RoundTripOutcome, Status, Subscription,
};
use crate::exporter::consume::{COUNTED_STATUSES, Consumer, Inbox, StatusCounts, counted_index};
// A panic elsewhere while the lock was held leaves the state consistent (each
// update is a map insert or an increment), and a poisoned lock must not turn
// into a panic in an SDK callback.
use crate::sync::lock;

/// Attribute keys (OpenTelemetry semantic conventions, sorted by key so the
/// SDK need not sort them on every measurement).
pub(super) const CLIENT_ID: &str = "mqtt.client.id";
pub(super) const SERVER_ADDRESS: &str = "server.address";
pub(super) const SERVER_PORT: &str = "server.port";
pub(super) const STATUS: &str = "status";
/// A broker-to-broker path's attributes: its publishing and receiving
/// clients and its name, and a message's outcome.
pub(super) const PATH_FROM: &str = "mqtt.path.from";
pub(super) const PATH_NAME: &str = "mqtt.path.name";
pub(super) const PATH_TO: &str = "mqtt.path.to";
/// The attribute of `mqtt.client.roundtrip.messages`: a round trip's outcome.
pub(super) const OUTCOME: &str = "outcome";

/// The recorder, shared by the consumer task and the SDK callbacks.
pub(super) struct Recorder {
    events: Events,
    inbox: Mutex<Inbox<Measures>>,
}

/// What the recorder folds events into.
pub(super) struct Measures {
    rtt: Histogram<f64>,
    /// Broker-to-broker paths' latencies.
    path_latency: Histogram<f64>,
    /// Each path's attributes, by publishing client and name.
    path_attributes: HashMap<(ClientId, Arc<str>), Arc<[KeyValue]>>,
    /// The probes' received round trips.
    roundtrip_rtt: Histogram<f64>,
    /// Each client's attributes, built once from the hub's `broker`.
    attributes: HashMap<ClientId, Arc<[KeyValue]>>,
    /// Status events seen per client.
    changes: HashMap<ClientId, StatusCounts>,
}

impl Recorder {
    pub(super) fn new(
        events: Events,
        subscription: Subscription,
        rtt: Histogram<f64>,
        roundtrip_rtt: Histogram<f64>,
        path_latency: Histogram<f64>,
    ) -> Self {
        Self {
            events,
            inbox: Mutex::new(Inbox::new(
                subscription,
                Measures {
                    rtt,
                    roundtrip_rtt,
                    path_latency,
                    path_attributes: HashMap::new(),
                    attributes: HashMap::new(),
                    changes: HashMap::new(),
                },
            )),
        }
    }

    /// The `mqtt.client.up` callback: 1 or 0 for every client the hub knows,
    /// read from its present state.
    pub(super) fn observe_up(&self, observer: &dyn AsyncInstrument<i64>) {
        for state in self.events.clients() {
            let attributes = client_attributes(&state.client_id, &state.info);
            observer.observe(i64::from(state.status.is_up()), &attributes);
        }
    }

    /// The `mqtt.client.status.changes` callback: the counts of every client
    /// the hub knows (zero for the statuses it has not had), after applying
    /// the queued events. Clients the hub forgot are dropped here too, in case
    /// their `Terminated` was lost to a full queue.
    pub(super) fn observe_changes(&self, observer: &dyn AsyncInstrument<u64>) {
        let mut inbox = lock(&self.inbox);
        self.apply_batch(&mut inbox, None, usize::MAX);
        // Read after catching up: a client the list lacks was terminated.
        let clients = self.events.clients();
        let measures = &mut inbox.folded;
        measures.retain_present(&clients);
        for state in &clients {
            let counts = measures
                .changes
                .get(state.client_id.as_str())
                .copied()
                .unwrap_or_default();
            let base = client_attributes(&state.client_id, &state.info);
            for (status, count) in COUNTED_STATUSES.iter().zip(counts) {
                let mut attributes = Vec::with_capacity(base.len() + 1);
                attributes.extend_from_slice(&base);
                attributes.push(KeyValue::new(STATUS, status.as_str()));
                // Extra labels may sort after `status`: keep the whole set sorted.
                attributes.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
                observer.observe(count, &attributes);
            }
        }
    }
}

impl Recorder {
    /// Each client's own probe counts (the hub's, read now) with the
    /// client's attributes; clients the hub no longer knows are left out.
    fn probes(&self) -> Vec<(Vec<KeyValue>, RoundTripCounts)> {
        let clients = self.events.clients();
        self.events
            .round_trips()
            .into_iter()
            .filter(|counts| counts.path.is_none())
            .filter_map(|counts| {
                let state = clients
                    .binary_search_by(|state| state.client_id.cmp(&counts.client_id))
                    .ok()
                    .map(|index| &clients[index])?;
                Some((client_attributes(&state.client_id, &state.info), counts))
            })
            .collect()
    }

    /// The `mqtt.client.roundtrip.sent` callback.
    pub(super) fn observe_round_trips_sent(&self, observer: &dyn AsyncInstrument<u64>) {
        for (attributes, counts) in self.probes() {
            observer.observe(counts.sent, &attributes);
        }
    }

    /// The `mqtt.client.roundtrip.messages` callback: every outcome of every
    /// probe, zeros included.
    pub(super) fn observe_round_trip_messages(&self, observer: &dyn AsyncInstrument<u64>) {
        for (base, counts) in self.probes() {
            for (outcome, count) in RoundTripOutcome::LABELS.iter().zip(counts.outcomes) {
                let mut attributes = Vec::with_capacity(base.len() + 1);
                attributes.extend_from_slice(&base);
                attributes.push(KeyValue::new(OUTCOME, *outcome));
                attributes.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
                observer.observe(count, &attributes);
            }
        }
    }

    /// The `mqtt.client.roundtrip.last_success` callback: Unix seconds, for
    /// the probes that had one.
    pub(super) fn observe_round_trip_last_success(&self, observer: &dyn AsyncInstrument<f64>) {
        for (attributes, counts) in self.probes() {
            if let Some(at) = counts.last_success {
                let seconds = at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |since| since.as_secs_f64());
                observer.observe(seconds, &attributes);
            }
        }
    }

    /// The `mqtt.path.sent` callback: every running path's messages sent,
    /// read from the hub's counts.
    pub(super) fn observe_path_sent(&self, observer: &dyn AsyncInstrument<u64>) {
        for counts in self.events.round_trips() {
            if let Some(attributes) = path_attributes(&counts) {
                observer.observe(counts.sent, &attributes);
            }
        }
    }

    /// The `mqtt.path.messages` callback: every running path's messages by
    /// outcome, read from the hub's counts.
    pub(super) fn observe_path_messages(&self, observer: &dyn AsyncInstrument<u64>) {
        for counts in self.events.round_trips() {
            let Some(base) = path_attributes(&counts) else {
                continue;
            };
            for (count, outcome) in counts.outcomes.iter().zip(RoundTripOutcome::LABELS) {
                let mut attributes = Vec::with_capacity(base.len() + 1);
                attributes.extend_from_slice(&base);
                attributes.push(KeyValue::new(OUTCOME, outcome));
                observer.observe(*count, &attributes);
            }
        }
    }
}

/// A path's attributes (sorted by key), or `None` for a client's own probe.
fn path_attributes(counts: &RoundTripCounts) -> Option<Vec<KeyValue>> {
    let name = counts.path.as_ref()?;
    let to = counts.to.as_ref().map_or("", ClientId::as_str);
    Some(vec![
        KeyValue::new(PATH_FROM, counts.client_id.as_str().to_owned()),
        KeyValue::new(PATH_NAME, name.to_string()),
        KeyValue::new(PATH_TO, to.to_owned()),
    ])
}

impl Consumer for Recorder {
    type Folded = Measures;

    fn inbox(&self) -> &Mutex<Inbox<Measures>> {
        &self.inbox
    }

    fn apply_batch(
        &self,
        inbox: &mut Inbox<Measures>,
        first: Option<Message>,
        limit: usize,
    ) -> usize {
        inbox.drain(first, limit, |measures, message| {
            measures.apply(&self.events, message);
        })
    }
}

impl Measures {
    fn apply(&mut self, events: &Events, message: &Message) {
        let id = &message.client_id;
        match message.event {
            Event::Status(Status::Terminated) => {
                self.attributes.remove(id.as_str());
                self.changes.remove(id.as_str());
                self.path_attributes.retain(|(from, _), _| from != id);
            }
            Event::Status(status) => {
                if let Some(index) = counted_index(status) {
                    match self.changes.get_mut(id.as_str()) {
                        Some(counts) => counts[index] += 1,
                        None => {
                            let mut counts = [0; COUNTED_STATUSES.len()];
                            counts[index] = 1;
                            self.changes.insert(id.clone(), counts);
                        }
                    }
                }
            }
            Event::PingResponse(rtt) => {
                let attributes = self.attributes_of(events, id);
                self.rtt.record(rtt.as_secs_f64(), &attributes);
            }
            // Only a probe's received round trips are timed; every count
            // is the hub's, read at each collection (`observe_round_trips`).
            Event::RoundTrip(RoundTrip {
                outcome: RoundTripOutcome::Received(rtt),
                path: None,
                ..
            }) => {
                let attributes = self.attributes_of(events, id);
                self.roundtrip_rtt.record(rtt.as_secs_f64(), &attributes);
            }
            Event::RoundTrip(RoundTrip {
                outcome: RoundTripOutcome::Received(rtt),
                path: Some(ref name),
                ..
            }) => {
                let key = (id.clone(), Arc::clone(name));
                let attributes = match self.path_attributes.get(&key) {
                    Some(attributes) => Arc::clone(attributes),
                    None => {
                        // The hub knows the path's receiving client; a path
                        // stopped meanwhile records with what it has.
                        let counts = events.round_trips().into_iter().find(|counts| {
                            counts.client_id == *id && counts.path.as_ref() == Some(name)
                        });
                        let attributes: Arc<[KeyValue]> = match counts {
                            Some(counts) => path_attributes(&counts).unwrap_or_default().into(),
                            None => vec![
                                KeyValue::new(PATH_FROM, id.as_str().to_owned()),
                                KeyValue::new(PATH_NAME, name.to_string()),
                            ]
                            .into(),
                        };
                        self.path_attributes.insert(key, Arc::clone(&attributes));
                        attributes
                    }
                };
                self.path_latency.record(rtt.as_secs_f64(), &attributes);
            }
            // Counted from the hub at each collection; see `round_trips`.
            Event::RoundTrip(_) => {}
        }
    }

    /// The client's attributes. A client not seen yet makes the cache reload
    /// from the hub (which knows every announced client, so this happens about
    /// once per client); one the hub does not know gets its id alone.
    fn attributes_of(&mut self, events: &Events, id: &ClientId) -> Arc<[KeyValue]> {
        if let Some(attributes) = self.attributes.get(id.as_str()) {
            return Arc::clone(attributes);
        }
        for state in events.clients() {
            self.attributes
                .entry(state.client_id.clone())
                .or_insert_with(|| client_attributes(&state.client_id, &state.info).into());
        }
        Arc::clone(
            self.attributes
                .entry(id.clone())
                .or_insert_with(|| client_attributes(id, &ClientInfo::default()).into()),
        )
    }

    /// Forgets every client not in `present` (sorted by client id).
    fn retain_present(&mut self, present: &[ClientState]) {
        let known = |id: &ClientId| {
            present
                .binary_search_by(|state| state.client_id.as_str().cmp(id.as_str()))
                .is_ok()
        };
        self.changes.retain(|id, _| known(id));
        self.attributes.retain(|id, _| known(id));
    }
}

/// `mqtt.client.id`, `server.address` / `server.port` split from the hub's
/// `host:port` broker (IPv6 hosts come as `[addr]:port`; the address is given
/// without brackets), and the client's extra constant labels, sorted by key.
/// A broker that is empty or has no numeric port gives only what it has.
pub(super) fn client_attributes(id: &ClientId, info: &ClientInfo) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(3 + info.labels.len());
    attributes.push(KeyValue::new(CLIENT_ID, id.as_str().to_owned()));
    let (host, port) = split_broker(&info.broker);
    if !host.is_empty() {
        attributes.push(KeyValue::new(SERVER_ADDRESS, host.to_owned()));
    }
    if let Some(port) = port {
        attributes.push(KeyValue::new(SERVER_PORT, i64::from(port)));
    }
    for (name, value) in info.labels.iter() {
        attributes.push(KeyValue::new(name.clone(), value.clone()));
    }
    attributes.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
    attributes
}

pub(super) fn split_broker(broker: &str) -> (&str, Option<u16>) {
    if let Some(rest) = broker.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => (host, port.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (broker, None),
        };
    }
    // A bare IPv6 address has no port to split off.
    if broker.matches(':').count() > 1 {
        return (broker, None);
    }
    match broker.split_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, port.parse().ok())
        }
        _ => (broker, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_split_into_address_and_port() {
        for (broker, expected) in [
            ("broker.example:1883", ("broker.example", Some(1883))),
            ("127.0.0.1:8883", ("127.0.0.1", Some(8883))),
            ("[::1]:1883", ("::1", Some(1883))),
            ("[fe80::1%eth0]:1883", ("fe80::1%eth0", Some(1883))),
            ("[::1]", ("::1", None)),
            ("broker.example", ("broker.example", None)),
            ("broker.example:", ("broker.example:", None)),
            ("broker.example:99999", ("broker.example", None)),
            ("", ("", None)),
        ] {
            assert_eq!(split_broker(broker), expected, "{broker:?}");
        }
    }

    #[test]
    fn attributes_are_sorted_by_key_and_skip_what_is_unknown() {
        let id = ClientId::from("probe");
        let full = client_attributes(&id, &ClientInfo::new("[::1]:1883"));
        let keys: Vec<&str> = full.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, [CLIENT_ID, SERVER_ADDRESS, SERVER_PORT]);
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(SERVER_PORT < STATUS);
        assert_eq!(full[2].value, opentelemetry::Value::I64(1883));
        let bare = client_attributes(&id, &ClientInfo::default());
        assert_eq!(bare.len(), 1);
        let labelled = client_attributes(
            &id,
            &ClientInfo::new("h:1").with_labels([
                ("zone".to_owned(), "z1".to_owned()),
                ("area".to_owned(), "a".to_owned()),
            ]),
        );
        let keys: Vec<&str> = labelled.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            ["area", CLIENT_ID, SERVER_ADDRESS, SERVER_PORT, "zone"]
        );
    }
}
