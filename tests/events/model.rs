//! A model-based property test: random operation sequences against a simple
//! model of the hub.

use std::collections::{BTreeMap, HashSet, VecDeque};

use mqtt_pulse::events::{
    ClientFilter, ClientId, ClientInfo, Event, EventKind, Events, FailureReason, KindStats, Status,
    Subscription, SubscriptionStats, TryRecvError,
};
use proptest::prelude::*;

use crate::{drain, id, ping, strip};

const SLOTS: usize = 3;
const CLIENTS: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Debug)]
enum Op {
    /// Drops whatever is in the slot and puts a fresh subscription there.
    Subscribe {
        slot: usize,
        capacity: usize,
    },
    Register {
        slot: usize,
        client: Option<usize>,
        kind: EventKind,
    },
    Unregister {
        slot: usize,
        client: Option<usize>,
        kind: EventKind,
    },
    Dispatch {
        client: usize,
        event: Event,
    },
    TryRecv {
        slot: usize,
    },
    Drain {
        slot: usize,
    },
    Drop {
        slot: usize,
    },
    Announce {
        client: usize,
    },
    CountFailure {
        client: usize,
        reason: FailureReason,
    },
}

fn kind_strategy() -> impl Strategy<Value = EventKind> {
    prop::sample::select(EventKind::ALL.to_vec())
}

fn filter_strategy() -> impl Strategy<Value = Option<usize>> {
    prop::option::of(0..CLIENTS.len())
}

fn event_strategy() -> impl Strategy<Value = Event> {
    prop_oneof![
        prop::sample::select(vec![
            Status::Up,
            Status::Down,
            Status::Terminating,
            Status::Terminated,
        ])
        .prop_map(Event::Status),
        (0u64..1000).prop_map(ping),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let client = 0..CLIENTS.len();
    prop_oneof![
        1 => (slot.clone(), 0usize..4).prop_map(|(slot, capacity)| Op::Subscribe { slot, capacity }),
        4 => (slot.clone(), filter_strategy(), kind_strategy())
            .prop_map(|(slot, client, kind)| Op::Register { slot, client, kind }),
        2 => (slot.clone(), filter_strategy(), kind_strategy())
            .prop_map(|(slot, client, kind)| Op::Unregister { slot, client, kind }),
        8 => (client.clone(), event_strategy()).prop_map(|(client, event)| Op::Dispatch { client, event }),
        3 => slot.clone().prop_map(|slot| Op::TryRecv { slot }),
        1 => slot.clone().prop_map(|slot| Op::Drain { slot }),
        1 => slot.prop_map(|slot| Op::Drop { slot }),
        1 => client.clone().prop_map(|client| Op::Announce { client }),
        1 => (client, prop::sample::select(FailureReason::ALL.to_vec()))
            .prop_map(|(client, reason)| Op::CountFailure { client, reason }),
    ]
}

/// What one subscription should hold, by the rules alone.
#[derive(Debug)]
struct ModelSub {
    capacity: usize,
    registrations: HashSet<(Option<usize>, EventKind)>,
    queue: VecDeque<(ClientId, Event)>,
    stats: SubscriptionStats,
}

impl ModelSub {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            registrations: HashSet::new(),
            queue: VecDeque::new(),
            stats: SubscriptionStats::default(),
        }
    }

    fn matches(&self, client: usize, kind: EventKind) -> bool {
        self.registrations.contains(&(Some(client), kind))
            || self.registrations.contains(&(None, kind))
    }
}

/// The hub, by the rules alone: plain data, no sharing, no locks.
#[derive(Debug, Default)]
struct Model {
    subs: [Option<ModelSub>; SLOTS],
    kinds: BTreeMap<EventKind, KindStats>,
    statuses: BTreeMap<usize, (Status, Option<&'static str>)>,
    failures: BTreeMap<(usize, FailureReason), u64>,
}

impl Model {
    fn dispatch(&mut self, client: usize, event: Event) {
        let kind = event.kind();
        let hub = self.kinds.entry(kind).or_default();
        hub.dispatched += 1;
        for sub in self.subs.iter_mut().flatten() {
            if !sub.matches(client, kind) {
                continue;
            }
            if sub.queue.len() < sub.capacity {
                sub.queue.push_back((id(CLIENTS[client]), event.clone()));
                sub.stats.delivered += 1;
                hub.delivered += 1;
            } else {
                sub.stats.dropped += 1;
                hub.dropped += 1;
            }
        }
        if let Event::Status(s) = event {
            if s == Status::Terminated {
                self.statuses.remove(&client);
                self.failures.retain(|(c, _), _| *c != client);
            } else {
                let info = self.statuses.get(&client).and_then(|(_, info)| *info);
                self.statuses.insert(client, (s, info));
            }
        }
    }
}

const BROKER: &str = "broker:1883";

fn filter(client: Option<usize>) -> ClientFilter {
    client.map_or(ClientFilter::Any, |c| ClientFilter::from(CLIENTS[c]))
}

fn check(
    events: &Events,
    subs: &[Option<Subscription>; SLOTS],
    model: &Model,
) -> Result<(), TestCaseError> {
    for (slot, (sub, expected)) in subs.iter().zip(&model.subs).enumerate() {
        match (sub, expected) {
            (Some(sub), Some(expected)) => {
                prop_assert_eq!(sub.stats(), expected.stats, "stats of slot {}", slot);
                prop_assert_eq!(sub.len(), expected.queue.len(), "queued in slot {}", slot);
                prop_assert_eq!(sub.capacity(), expected.capacity);
                let held: HashSet<_> = sub.registrations().cloned().collect();
                let want: HashSet<_> = expected
                    .registrations
                    .iter()
                    .map(|(c, k)| (filter(*c), *k))
                    .collect();
                prop_assert_eq!(held, want, "registrations of slot {}", slot);
            }
            (None, None) => {}
            _ => prop_assert!(false, "slot {} occupancy differs", slot),
        }
    }
    for kind in EventKind::ALL {
        let expected = model.kinds.get(&kind).copied().unwrap_or_default();
        prop_assert_eq!(events.stats(kind), expected, "hub stats of {}", kind);
    }
    let clients: Vec<_> = events
        .clients()
        .into_iter()
        .map(|c| (c.client_id.to_string(), c.status, c.info.broker.to_string()))
        .collect();
    let want: Vec<_> = model
        .statuses
        .iter()
        .map(|(c, (s, info))| (CLIENTS[*c].to_string(), *s, info.unwrap_or("").to_string()))
        .collect();
    prop_assert_eq!(clients, want);
    for (c, name) in CLIENTS.iter().enumerate() {
        prop_assert_eq!(events.status(name), model.statuses.get(&c).map(|(s, _)| *s));
    }
    let failures: Vec<_> = events
        .failures()
        .into_iter()
        .map(|f| (f.client_id.to_string(), f.reason, f.count))
        .collect();
    let want: Vec<_> = model
        .failures
        .iter()
        .map(|((c, r), n)| (CLIENTS[*c].to_string(), *r, *n))
        .collect();
    prop_assert_eq!(failures, want);
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let events = Events::with_queue_capacity(2);
    let mut subs: [Option<Subscription>; SLOTS] = Default::default();
    let mut model = Model::default();

    for op in ops {
        match op {
            Op::Subscribe { slot, capacity } => {
                subs[slot] = Some(events.subscribe_with_capacity(capacity));
                model.subs[slot] = Some(ModelSub::new(capacity));
            }
            Op::Register { slot, client, kind } => {
                if let (Some(sub), Some(m)) = (&mut subs[slot], &mut model.subs[slot]) {
                    sub.register(filter(client), kind);
                    m.registrations.insert((client, kind));
                } else if subs[slot].is_none() {
                    // An empty slot gets `Events::register` with the hub's default.
                    subs[slot] = Some(events.register(filter(client), kind));
                    let mut m = ModelSub::new(2);
                    m.registrations.insert((client, kind));
                    model.subs[slot] = Some(m);
                }
            }
            Op::Unregister { slot, client, kind } => {
                if let (Some(sub), Some(m)) = (&mut subs[slot], &mut model.subs[slot]) {
                    sub.unregister(filter(client), kind);
                    match client {
                        None => m.registrations.retain(|(_, k)| *k != kind),
                        Some(_) => {
                            m.registrations.remove(&(client, kind));
                        }
                    }
                }
            }
            Op::Dispatch { client, event } => {
                events.dispatch(&id(CLIENTS[client]), event.clone());
                model.dispatch(client, event);
            }
            Op::TryRecv { slot } => {
                if let (Some(sub), Some(m)) = (&mut subs[slot], &mut model.subs[slot]) {
                    let got = sub.try_recv().map(strip).ok();
                    prop_assert_eq!(got, m.queue.pop_front(), "try_recv on slot {}", slot);
                }
            }
            Op::Drain { slot } => {
                if let (Some(sub), Some(m)) = (&mut subs[slot], &mut model.subs[slot]) {
                    let want: Vec<_> = m.queue.drain(..).collect();
                    prop_assert_eq!(drain(sub), want, "drain of slot {}", slot);
                }
            }
            Op::Drop { slot } => {
                subs[slot] = None;
                model.subs[slot] = None;
            }
            Op::Announce { client } => {
                events.announce(&id(CLIENTS[client]), ClientInfo::new(BROKER));
                let entry = model.statuses.entry(client).or_insert((Status::Down, None));
                entry.1 = Some(BROKER);
            }
            Op::CountFailure { client, reason } => {
                events.count_failure(&id(CLIENTS[client]), reason);
                *model.failures.entry((client, reason)).or_default() += 1;
            }
        }
        check(&events, &subs, &model)?;
    }

    // At the end, every queue holds exactly what the model says, in order.
    for (sub, m) in subs.iter_mut().zip(&mut model.subs) {
        if let (Some(sub), Some(m)) = (sub, m) {
            let want: Vec<_> = m.queue.drain(..).collect();
            prop_assert_eq!(drain(sub), want);
        }
    }
    // And once the hub is gone, every stream ends.
    drop(events);
    for sub in subs.iter_mut().flatten() {
        prop_assert_eq!(sub.try_recv(), Err(TryRecvError::Closed));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_hub_behaves_like_a_simple_model(ops in prop::collection::vec(op_strategy(), 0..80)) {
        run(ops)?;
    }
}
