//! What the daemon's `/-/ready` waits for: its config loaded (it serves only
//! after that) and every target it owns attempted once — connected, or
//! failed with a reason counted — so that a rollout moves on only once this
//! replica watches its share.
//!
//! It owns the list of targets not yet seen attempted, which the supervisor
//! sets at start and at each reload (a reload's new and changed targets make
//! it unready until they too were attempted). It must stay cheap — probes
//! are open to anyone who reaches the port, no credentials, no rate limit:
//! once every target was attempted a check reads one atomic; before that the
//! hub is read at most once per [`RECHECK`], by whichever probe gets the lock
//! (the others answer with the last count at once, never waiting on it) —
//! and it never names a client id in its answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use crate::events::{ClientId, ClientState, Events, Status};
use crate::sync::lock;

/// How often, at most, a probe reads the hub while targets are waiting.
const RECHECK: Duration = Duration::from_millis(100);

/// Shared by the supervisor, which sets the targets, and `/-/ready`.
#[derive(Clone)]
pub(super) struct Attempted {
    events: Events,
    state: Arc<Mutex<Pending>>,
    /// The last count of waiting targets (0: ready), and how many are owned:
    /// what a probe answers without the lock.
    waiting: Arc<AtomicUsize>,
    owned: Arc<AtomicUsize>,
    recheck: Duration,
}

#[derive(Default)]
struct Pending {
    /// Owned targets not yet seen attempted, sorted.
    waiting: Vec<ClientId>,
    /// When the hub was last read for them.
    checked: Option<Instant>,
}

impl Attempted {
    pub(super) fn new(events: &Events) -> Self {
        Attempted::rechecking_every(events, RECHECK)
    }

    fn rechecking_every(events: &Events, recheck: Duration) -> Self {
        Attempted {
            events: events.clone(),
            state: Arc::default(),
            waiting: Arc::default(),
            owned: Arc::default(),
            recheck,
        }
    }

    /// The targets this replica runs now, after a start or a reload.
    pub(super) fn expect(&self, running: impl IntoIterator<Item = ClientId>) {
        let mut waiting: Vec<ClientId> = running.into_iter().collect();
        waiting.sort();
        let mut state = lock(&self.state);
        self.owned.store(waiting.len(), Ordering::Relaxed);
        self.waiting.store(waiting.len(), Ordering::Relaxed);
        *state = Pending {
            waiting,
            checked: None,
        };
    }

    /// `Ok` once every owned target was attempted, else how many were not.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        match self.state.try_lock() {
            Ok(mut state) => self.recount(&mut state),
            Err(TryLockError::Poisoned(poisoned)) => self.recount(&mut poisoned.into_inner()),
            // Another probe is reading the hub: its count is as fresh.
            Err(TryLockError::WouldBlock) => {}
        }
        match self.waiting.load(Ordering::Relaxed) {
            0 => Ok(()),
            waiting => Err(format!(
                "{waiting} of the {} targets this replica owns have not finished a first \
                 connect attempt",
                self.owned.load(Ordering::Relaxed)
            )),
        }
    }

    /// Drops the targets attempted since, reading the hub at most once per
    /// `recheck`.
    fn recount(&self, state: &mut Pending) {
        let now = Instant::now();
        if state
            .checked
            .is_some_and(|at| now.duration_since(at) < self.recheck)
        {
            return;
        }
        state.checked = Some(now);
        let clients = self.events.clients();
        state.waiting.retain(|id| {
            let known = clients.binary_search_by(|c| c.client_id.as_str().cmp(id.as_str()));
            !known.is_ok_and(|at| attempted(&clients[at]))
        });
        self.waiting.store(state.waiting.len(), Ordering::Relaxed);
    }
}

/// Whether the client's connection has finished an attempt: it is (or was)
/// up, or a failure was counted — a down client with no reason is still at
/// its first attempt, or waiting for its turn to connect.
fn attempted(state: &ClientState) -> bool {
    state.status != Status::Down || state.reason.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ClientInfo, Event, FailureReason};

    #[test]
    fn ready_once_each_target_connected_or_failed() {
        let events = Events::new();
        let attempted = Attempted::rechecking_every(&events, Duration::ZERO);
        let (up, refused) = (ClientId::from("up"), ClientId::from("refused"));
        for id in [&up, &refused] {
            events.announce(id, ClientInfo::new("b:1883"));
        }
        attempted.expect([up.clone(), refused.clone()]);
        assert_eq!(
            attempted.check(),
            Err(
                "2 of the 2 targets this replica owns have not finished a first connect attempt"
                    .to_owned()
            )
        );
        events.dispatch(&up, Event::Status(Status::Up));
        assert!(attempted.check().unwrap_err().starts_with("1 of the 2 "));
        events.count_failure(&refused, FailureReason::ConnectionRefused);
        assert_eq!(attempted.check(), Ok(()));
        // Ready stays ready: a target going down later was attempted.
        events.dispatch(&up, Event::Status(Status::Down));
        assert_eq!(attempted.check(), Ok(()));
    }

    #[test]
    fn a_reload_waits_for_its_new_targets_and_nothing_owned_is_ready() {
        let events = Events::new();
        let attempted = Attempted::rechecking_every(&events, Duration::ZERO);
        attempted.expect([]);
        assert_eq!(attempted.check(), Ok(()));
        let new = ClientId::from("new");
        events.announce(&new, ClientInfo::new("b:1883"));
        attempted.expect([new.clone()]);
        assert!(attempted.check().is_err());
        events.dispatch(&new, Event::Status(Status::Up));
        assert_eq!(attempted.check(), Ok(()));
    }
}

#[cfg(test)]
mod flood {
    use super::*;
    use crate::events::{ClientInfo, Event};

    #[test]
    fn probes_read_the_hub_at_most_once_per_recheck_interval() {
        // A flood of probes while not ready costs one read of the hub per
        // interval, not one per probe: within it the last count stands.
        let events = Events::new();
        let attempted = Attempted::rechecking_every(&events, Duration::from_secs(3600));
        let id = ClientId::from("a");
        events.announce(&id, ClientInfo::new("b:1883"));
        attempted.expect([id.clone()]);
        assert!(attempted.check().is_err());
        events.dispatch(&id, Event::Status(Status::Up));
        for _ in 0..1000 {
            assert!(
                attempted.check().is_err(),
                "read the hub again within the interval"
            );
        }
        // A reload starts over and reads it at once.
        attempted.expect([id]);
        assert_eq!(attempted.check(), Ok(()));
    }
}
