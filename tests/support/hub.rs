//! Awaiting what the events hub says: the next message of a subscription,
//! every one of a set of clients reaching a status, a failure count. Each
//! waits on the real hub (its events, or its counters where failures are
//! counters and nothing can be awaited) against a deadline, and fails the
//! test with what it saw instead.

use std::collections::HashMap;
use std::time::Duration;

use mqtt_pulse::events::{ClientId, Event, Events, FailureReason, Message, Status, Subscription};
use tokio::time::{Instant, timeout, timeout_at};

use super::failures;

/// The next message, failing the test if none comes within `limit`.
pub async fn next(sub: &mut Subscription, limit: Duration) -> Message {
    match timeout(limit, sub.recv()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("the hub went away"),
        Err(_) => panic!("no event within {limit:?}"),
    }
}

/// Waits for a failure count (over every client) to reach `at_least`,
/// polling the hub's counter every 2 ms.
pub async fn wait_for_failures(
    events: &Events,
    reason: FailureReason,
    at_least: u64,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    while failures(events, reason) < at_least {
        assert!(
            Instant::now() < deadline,
            "fewer than {at_least} {reason} failures within {limit:?}: {:?}",
            events.failures()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Every status message a status subscription delivered, per client, in
/// order: what [`await_each`] reads into, so that a flap between two waits is
/// still seen.
pub type History = HashMap<ClientId, Vec<Message>>;

/// Reads the status subscription `sub` until each of `ids` has had a
/// message with status `want` since this call started, and returns that
/// message for each (with its `at` and, on a Down, its `reason`). Every
/// status message read is appended to `history`. Returns `Err` with the ids
/// still waiting if `limit` passes first, so the caller can say which cell
/// of a matrix failed.
pub async fn await_each(
    sub: &mut Subscription,
    history: &mut History,
    ids: &[ClientId],
    want: Status,
    limit: Duration,
) -> Result<HashMap<ClientId, Message>, Vec<ClientId>> {
    let deadline = Instant::now() + limit;
    let mut reached: HashMap<ClientId, Message> = HashMap::new();
    while reached.len() < ids.len() {
        let message = match timeout_at(deadline, sub.recv()).await {
            Ok(Some(message)) => message,
            Ok(None) => panic!("the hub went away"),
            Err(_) => {
                return Err(ids
                    .iter()
                    .filter(|id| !reached.contains_key(*id))
                    .cloned()
                    .collect());
            }
        };
        let Event::Status(status) = message.event else {
            panic!("a status subscription got {message:?}");
        };
        history
            .entry(message.client_id.clone())
            .or_default()
            .push(message.clone());
        if status == want && ids.contains(&message.client_id) {
            reached.entry(message.client_id.clone()).or_insert(message);
        }
    }
    Ok(reached)
}

/// The statuses in a [`History`] of one client.
pub fn statuses(history: &History, id: &ClientId) -> Vec<Status> {
    history
        .get(id)
        .into_iter()
        .flatten()
        .filter_map(|message| match message.event {
            Event::Status(status) => Some(status),
            _ => None,
        })
        .collect()
}
