//! Connect pacing: at most a bounded number of connect handshakes (TCP
//! connect, TLS, CONNECT through CONNACK) in flight at once to one broker,
//! shared by every connection of the process to that broker.
//!
//! Why: a thousand targets started at once, or reconnecting together after a
//! broker restart, send a thousand SYNs at the broker's listen queue
//! (Mosquitto listens with a backlog of 100). What overflows is dropped and
//! retried by the kernel only after its 1 s SYN retransmit, so unpaced, most
//! targets come up a second late and the broker takes the whole herd at
//! once. With the handshakes bounded below the backlog, none is dropped and
//! all are up sooner (BENCHMARKS.md, "Connect pacing").
//!
//! It owns a process-wide registry of pools, one per broker address (the
//! `host:port` of [`ConnectionOptions::broker`](super::ConnectionOptions::broker))
//! and limit, each a fair (first come, first served) semaphore: attempts
//! start in the order their connections asked, which is the order they were
//! started in, and after a restart the order the reconnect backoff's jitter
//! spread them in. A pool lives while a connection holds it. It must never
//! hold its registry lock across an `.await`, and never count the wait for
//! a permit as part of the connect timeout: the driver waits for the permit
//! first (cancellable by shutdown) and only then starts the timed attempt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use tokio::sync::Semaphore;

use crate::sync::lock;

/// How many connect handshakes to one broker may be in flight at once when
/// the options set no limit: below Mosquitto's listen backlog of 100, so a
/// crowd of targets never overflows it, and as fast as any larger value in
/// the measurement (BENCHMARKS.md, "Connect pacing").
pub const DEFAULT_CONNECT_CONCURRENCY: usize = 64;

/// What one pool (a broker address and limit) has seen, for tests, logs and
/// an embedder's own metrics.
///
/// ```
/// use mqtt_pulse::connection::{Connection, ConnectionOptions, DEFAULT_CONNECT_CONCURRENCY};
/// use mqtt_pulse::events::Events;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let events = Events::new();
/// // Port 9 (discard): nothing listens there, and the attempt fails fast.
/// let options = ConnectionOptions::new("probe-1", "mqtt://127.0.0.1:9")?;
/// let connection = Connection::start(options, &events)?;
/// let pacing = connection.pacing().expect("paced by default");
/// assert_eq!(pacing.limit, DEFAULT_CONNECT_CONCURRENCY);
/// assert!(pacing.peak_in_flight <= pacing.limit);
/// connection.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PacingStats {
    /// The most handshakes allowed in flight at once.
    pub limit: usize,
    /// Handshakes in flight now.
    pub in_flight: usize,
    /// Connections waiting for their turn to start one.
    pub waiting: usize,
    /// The most handshakes ever in flight at once (never above `limit`).
    pub peak_in_flight: usize,
    /// Handshakes started since the pool was created.
    pub started: u64,
}

/// The pool of one broker address and limit.
#[derive(Debug)]
pub(crate) struct Pool {
    limit: usize,
    semaphore: Semaphore,
    in_flight: AtomicUsize,
    waiting: AtomicUsize,
    peak: AtomicUsize,
    started: AtomicU64,
}

/// The right to run one handshake; gives it back when dropped (on CONNACK, on
/// a failed attempt, on shutdown).
#[derive(Debug)]
pub(crate) struct Permit {
    pool: Arc<Pool>,
}

type Registry = HashMap<(String, usize), Weak<Pool>>;

static POOLS: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

/// The pool shared by the connections to `broker` with this `limit`; `None`
/// for limit 0 (unpaced).
pub(crate) fn join(broker: &str, limit: usize) -> Option<Arc<Pool>> {
    if limit == 0 {
        return None;
    }
    let mut pools = lock(&POOLS);
    let key = (broker.to_owned(), limit);
    if let Some(pool) = pools.get(&key).and_then(Weak::upgrade) {
        return Some(pool);
    }
    // Forget the pools nobody holds any more before adding one, so the
    // registry stays as small as the set of brokers in use.
    pools.retain(|_, pool| pool.strong_count() > 0);
    let pool = Arc::new(Pool::new(limit));
    pools.insert(key, Arc::downgrade(&pool));
    Some(pool)
}

impl Pool {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            semaphore: Semaphore::new(limit.min(Semaphore::MAX_PERMITS)),
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            started: AtomicU64::new(0),
        }
    }

    /// Waits for a turn (first come, first served). Cancel-safe: a
    /// connection shut down while waiting leaves the queue as it was.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Permit {
        let waiting = Waiting::new(&self.waiting);
        // The semaphore is never closed, so `acquire` cannot fail.
        if let Ok(permit) = self.semaphore.acquire().await {
            // Given back by `Permit`'s Drop, with the count beside it.
            permit.forget();
        }
        drop(waiting);
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        Permit {
            pool: Arc::clone(self),
        }
    }

    pub(crate) fn stats(&self) -> PacingStats {
        PacingStats {
            limit: self.limit,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            peak_in_flight: self.peak.load(Ordering::Relaxed),
            started: self.started.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // The count first: `in_flight` never reads above the permits taken.
        self.pool.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.pool.semaphore.add_permits(1);
    }
}

/// Counts a connection in the queue while its wait lasts, cancelled or not.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_zero_is_unpaced() {
        assert!(join("pacing-test-zero:1883", 0).is_none());
    }

    #[test]
    fn connections_to_one_broker_with_one_limit_share_a_pool() {
        let a = join("pacing-test-share:1883", 4).unwrap();
        let b = join("pacing-test-share:1883", 4).unwrap();
        let other_broker = join("pacing-test-other:1883", 4).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &other_broker));
    }

    #[test]
    fn a_pool_nobody_holds_is_made_anew() {
        let first = join("pacing-test-gone:1883", 2).unwrap();
        let weak = Arc::downgrade(&first);
        drop(first);
        assert!(weak.upgrade().is_none());
        let second = join("pacing-test-gone:1883", 2).unwrap();
        assert_eq!(second.stats().started, 0);
    }

    #[tokio::test]
    async fn at_most_the_limit_run_and_the_rest_wait_in_order() {
        let pool = join("pacing-test-order:1883", 2).unwrap();
        let first = pool.acquire().await;
        let second = pool.acquire().await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..3 {
            let (shared, tx) = (Arc::clone(&pool), tx.clone());
            tokio::spawn(async move {
                let permit = shared.acquire().await;
                tx.send((n, permit)).unwrap();
            });
            // Each waiter queued before the next is spawned.
            while pool.stats().waiting < n + 1 {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(pool.stats().in_flight, 2);
        assert!(rx.try_recv().is_err(), "a third handshake started");
        drop(first);
        let (n, permit) = rx.recv().await.unwrap();
        assert_eq!(n, 0, "first come, first served");
        drop(second);
        let (n, later) = rx.recv().await.unwrap();
        assert_eq!(n, 1);
        drop(permit);
        let (n, last) = rx.recv().await.unwrap();
        assert_eq!(n, 2);
        drop((later, last));
        let stats = pool.stats();
        assert_eq!((stats.peak_in_flight, stats.started), (2, 5));
        assert_eq!((stats.in_flight, stats.waiting), (0, 0));
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_the_queue() {
        let pool = join("pacing-test-cancel:1883", 1).unwrap();
        let held = pool.acquire().await;
        // Polled once (it queues), then dropped as a shutdown drops it.
        tokio::select! {
            biased;
            _ = pool.acquire() => panic!("a second handshake started"),
            () = std::future::ready(()) => {}
        }
        assert_eq!(pool.stats().waiting, 0);
        drop(held);
        let _again = pool.acquire().await;
        assert_eq!(pool.stats().in_flight, 1);
    }
}
