//! What the daemon's `/-/ready` waits for: its config loaded (it serves only
//! after that) and every target it owns attempted once — connected, or
//! failed with a reason counted — so that a rollout moves on only once this
//! replica watches its share.
//!
//! It owns the list of targets not yet seen attempted, which the supervisor
//! sets at start and at each reload (a reload's new and changed targets make
//! it unready until they too were attempted). It must stay cheap — probes
//! are open to anyone who reaches the port: once every target was attempted
//! a check is one lock and an empty list — and it never names a client id in
//! its answer.

use std::sync::{Arc, Mutex};

use crate::events::{ClientId, ClientState, Events, Status};
use crate::sync::lock;

/// Shared by the supervisor, which sets the targets, and `/-/ready`.
#[derive(Clone)]
pub(super) struct Attempted {
    events: Events,
    state: Arc<Mutex<Pending>>,
}

#[derive(Default)]
struct Pending {
    /// Owned targets not yet seen attempted, sorted.
    waiting: Vec<ClientId>,
    /// How many targets this replica owns.
    owned: usize,
}

impl Attempted {
    pub(super) fn new(events: &Events) -> Self {
        Attempted {
            events: events.clone(),
            state: Arc::default(),
        }
    }

    /// The targets this replica runs now, after a start or a reload.
    pub(super) fn expect(&self, running: impl IntoIterator<Item = ClientId>) {
        let mut waiting: Vec<ClientId> = running.into_iter().collect();
        waiting.sort();
        *lock(&self.state) = Pending {
            owned: waiting.len(),
            waiting,
        };
    }

    /// `Ok` once every owned target was attempted, else how many were not.
    pub(super) fn check(&self) -> Result<(), String> {
        let mut state = lock(&self.state);
        if state.waiting.is_empty() {
            return Ok(());
        }
        let clients = self.events.clients();
        state.waiting.retain(|id| {
            let known = clients.binary_search_by(|c| c.client_id.as_str().cmp(id.as_str()));
            !known.is_ok_and(|at| attempted(&clients[at]))
        });
        match state.waiting.len() {
            0 => Ok(()),
            waiting => Err(format!(
                "{waiting} of the {} targets this replica owns have not finished a first \
                 connect attempt",
                state.owned
            )),
        }
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
        let attempted = Attempted::new(&events);
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
        let attempted = Attempted::new(&events);
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
