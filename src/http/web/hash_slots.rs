//! The slots bcrypt hashes run in, and the queue for them.
//!
//! Design: a [`Slot`] is taken before a hash is spawned and moved *into* the
//! blocking task, so it is released when the hash finishes, not when the
//! request that asked for it goes away: the number of slots bounds the hashes
//! actually running (and so the blocking threads they hold), whatever the
//! clients do. A request without a free slot waits in one of two FIFO queues,
//! [`Priority::Clean`] ahead of [`Priority::Suspect`]; a released slot is
//! handed straight to the next waiter still there. At most
//! [`MAX_WAITING`](HashSlots::new) wait: beyond that a suspect request is
//! refused at once, and a clean one takes the place of the newest suspect
//! waiter (which is refused).
//!
//! It must never lose a slot: a slot handed to a waiter that has just gone is
//! dropped with the channel, and passes itself on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// Which queue a request waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Priority {
    /// From a source with nothing failed lately: served first.
    Clean,
    /// From a source with failures or attempts in flight.
    Suspect,
}

/// A bounded number of slots and the queues for them. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct HashSlots {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: usize,
    max_waiting: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    most_running: usize,
    clean: VecDeque<oneshot::Sender<Slot>>,
    suspect: VecDeque<oneshot::Sender<Slot>>,
}

impl State {
    fn waiting(&self) -> usize {
        self.clean.len() + self.suspect.len()
    }

    /// Drops the waiters whose request has gone.
    fn forget_gone(&mut self) {
        self.clean.retain(|waiter| !waiter.is_closed());
        self.suspect.retain(|waiter| !waiter.is_closed());
    }
}

/// One slot, held while a hash runs; released (to the next waiter, if any)
/// on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    /// `None` once handed on.
    inner: Option<Arc<Inner>>,
}

impl HashSlots {
    /// `limit` slots (at least one), at most `max_waiting` requests waiting.
    pub(crate) fn new(limit: usize, max_waiting: usize) -> Self {
        HashSlots {
            inner: Arc::new(Inner {
                limit: limit.max(1),
                max_waiting,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// A slot, at once or after waiting in `priority`'s queue; `None` when
    /// the queue is full (or this request was pushed out of it by a clean
    /// one).
    pub(crate) async fn acquire(&self, priority: Priority) -> Option<Slot> {
        let waiting = {
            let mut state = self.inner.state();
            if state.running < self.inner.limit {
                state.running += 1;
                state.most_running = state.most_running.max(state.running);
                return Some(Slot {
                    inner: Some(Arc::clone(&self.inner)),
                });
            }
            if state.waiting() >= self.inner.max_waiting {
                state.forget_gone();
            }
            // Full: a clean request pushes the newest suspect one out.
            if state.waiting() >= self.inner.max_waiting
                && (priority == Priority::Suspect || state.suspect.pop_back().is_none())
            {
                return None;
            }
            let (sender, receiver) = oneshot::channel();
            match priority {
                Priority::Clean => state.clean.push_back(sender),
                Priority::Suspect => state.suspect.push_back(sender),
            }
            receiver
        };
        waiting.await.ok()
    }

    /// How many slots are taken now.
    #[cfg(test)]
    pub(crate) fn running(&self) -> usize {
        self.inner.state().running
    }

    /// The most slots ever taken at once.
    #[cfg(test)]
    pub(crate) fn most_running(&self) -> usize {
        self.inner.state().most_running
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every change to the state is complete before anything can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        loop {
            let next = {
                let mut state = inner.state();
                match state
                    .clean
                    .pop_front()
                    .or_else(|| state.suspect.pop_front())
                {
                    Some(waiter) => waiter,
                    None => {
                        state.running -= 1;
                        return;
                    }
                }
            };
            // Sent outside the lock; a waiter that has gone gives the slot
            // back, emptied, and the next one is tried.
            match next.send(Slot {
                inner: Some(Arc::clone(&inner)),
            }) {
                Ok(()) => return,
                Err(mut returned) => returned.inner = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::task::JoinHandle;

    /// Spawns a request for a slot and lets it get into its queue.
    async fn waiter(slots: &HashSlots, priority: Priority) -> JoinHandle<Option<Slot>> {
        let slots = slots.clone();
        let task = tokio::spawn(async move { slots.acquire(priority).await });
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        task
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_more_slots_than_the_limit_are_ever_taken() {
        let slots = HashSlots::new(2, 10);
        let a = slots.acquire(Priority::Suspect).await.unwrap();
        let _b = slots.acquire(Priority::Suspect).await.unwrap();
        let third = waiter(&slots, Priority::Clean).await;
        assert!(!third.is_finished());
        assert_eq!(slots.running(), 2);
        drop(a);
        let _c = third.await.unwrap().unwrap();
        assert_eq!((slots.running(), slots.most_running()), (2, 2));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_released_slot_goes_to_clean_waiters_before_suspect_ones_each_in_order() {
        let slots = HashSlots::new(1, 10);
        let held = slots.acquire(Priority::Suspect).await.unwrap();
        let suspect_1 = waiter(&slots, Priority::Suspect).await;
        let suspect_2 = waiter(&slots, Priority::Suspect).await;
        let clean = waiter(&slots, Priority::Clean).await;

        drop(held);
        let slot = clean.await.unwrap().unwrap();
        assert!(!suspect_1.is_finished() && !suspect_2.is_finished());
        drop(slot);
        let slot = suspect_1.await.unwrap().unwrap();
        assert!(!suspect_2.is_finished());
        drop(slot);
        drop(suspect_2.await.unwrap().unwrap());
        assert_eq!(slots.running(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn waiters_that_went_away_are_skipped_and_no_slot_is_lost() {
        let slots = HashSlots::new(1, 10);
        let held = slots.acquire(Priority::Suspect).await.unwrap();
        let gone = waiter(&slots, Priority::Clean).await;
        let staying = waiter(&slots, Priority::Suspect).await;
        gone.abort();
        let _ = gone.await;
        drop(held);
        drop(staying.await.unwrap().unwrap());
        assert_eq!(slots.running(), 0);
        assert!(slots.acquire(Priority::Suspect).await.is_some());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_refuses_suspects_and_makes_room_for_a_clean_request() {
        let slots = HashSlots::new(1, 2);
        let held = slots.acquire(Priority::Suspect).await.unwrap();
        let first = waiter(&slots, Priority::Suspect).await;
        let newest = waiter(&slots, Priority::Suspect).await;
        assert!(slots.acquire(Priority::Suspect).await.is_none(), "full");

        let clean = waiter(&slots, Priority::Clean).await;
        assert!(newest.await.unwrap().is_none(), "pushed out");
        drop(held);
        drop(clean.await.unwrap().unwrap());
        drop(first.await.unwrap().unwrap());
        assert_eq!(slots.running(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_slot_moved_into_a_blocking_task_is_held_until_that_task_ends() {
        let slots = HashSlots::new(1, 10);
        let slot = slots.acquire(Priority::Suspect).await.unwrap();
        let (finish, finished) = std::sync::mpsc::channel::<()>();
        let request = tokio::spawn(async move {
            tokio::task::spawn_blocking(move || {
                let _slot = slot;
                finished.recv().unwrap();
            })
            .await
        });
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        // The request goes away; the work it started does not.
        request.abort();
        assert!(request.await.unwrap_err().is_cancelled());
        assert_eq!(slots.running(), 1);
        let next = waiter(&slots, Priority::Clean).await;
        assert!(!next.is_finished());
        finish.send(()).unwrap();
        drop(next.await.unwrap().unwrap());
        assert_eq!(slots.running(), 0);
    }
}
