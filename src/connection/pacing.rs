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
//!
//! It also owns the two gauges that show the pools on a Prometheus registry
//! ([`register_metrics`]), per broker address — never per connection: a
//! thousand targets on one broker are one series each.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts, Registry};
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

type Pools = HashMap<(String, usize), Weak<Pool>>;

static POOLS: LazyLock<Mutex<Pools>> = LazyLock::new(Mutex::default);

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

/// `mqtt_pulse_connect_pacing_waiting`: the gauge of connections waiting for
/// a turn, per broker.
pub const WAITING_METRIC: &str = "mqtt_pulse_connect_pacing_waiting";

/// `mqtt_pulse_connect_pacing_in_flight`: the gauge of handshakes in flight,
/// per broker.
pub const IN_FLIGHT_METRIC: &str = "mqtt_pulse_connect_pacing_in_flight";

/// Registers on `registry` the gauges of this process's connect pacing, read
/// at each scrape from the pools alive then, labelled `broker` (the
/// `host:port` the clients' `mqtt_client_*` series carry):
///
/// * [`WAITING_METRIC`] — connections waiting for their turn to start a
///   handshake. Non-zero for long means the broker answers slowly or not at
///   all (each turn lasts until CONNACK or the connect timeout).
/// * [`IN_FLIGHT_METRIC`] — handshakes in flight (TCP connect, TLS,
///   CONNECT through CONNACK), at most the broker's limit.
///
/// A broker has series while a paced connection to it exists; unpaced
/// connections (a limit of 0) are in no pool and show in neither. Pools of
/// one broker with different limits (connections started with different
/// options) are summed.
///
/// ```
/// let registry = prometheus::Registry::new();
/// mqtt_pulse::connection::pacing::register_metrics(&registry)?;
/// # Ok::<(), prometheus::Error>(())
/// ```
///
/// # Errors
///
/// The registry's, if it already has metrics of these names.
pub fn register_metrics(registry: &Registry) -> prometheus::Result<()> {
    registry.register(Box::new(PacingCollector::new()?))
}

/// Reads every live pool at collection time (a gauge set on each change would
/// put a registry's lock on the connect path).
struct PacingCollector {
    descs: Vec<Desc>,
}

impl PacingCollector {
    fn new() -> prometheus::Result<Self> {
        let descs = Self::gauges()?
            .iter()
            .flat_map(|gauge| gauge.desc().into_iter().cloned())
            .collect();
        Ok(Self { descs })
    }

    /// Fresh gauges, so two scrapes at once never see each other's values.
    fn gauges() -> prometheus::Result<[IntGaugeVec; 2]> {
        let waiting = IntGaugeVec::new(
            Opts::new(
                WAITING_METRIC,
                "Connection attempts to the broker waiting for a turn to start their \
                 connect handshake (connect pacing: connect_concurrency handshakes in \
                 flight at once per broker).",
            ),
            &["broker"],
        )?;
        let in_flight = IntGaugeVec::new(
            Opts::new(
                IN_FLIGHT_METRIC,
                "Connect handshakes to the broker in flight (TCP connect, TLS, CONNECT \
                 through CONNACK), at most connect_concurrency.",
            ),
            &["broker"],
        )?;
        Ok([waiting, in_flight])
    }
}

impl Collector for PacingCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok([waiting, in_flight]) = Self::gauges() else {
            return Vec::new();
        };
        for (broker, (queued, running)) in per_broker() {
            waiting
                .with_label_values(&[broker.as_str()])
                .set(i64::try_from(queued).unwrap_or(i64::MAX));
            in_flight
                .with_label_values(&[broker.as_str()])
                .set(i64::try_from(running).unwrap_or(i64::MAX));
        }
        let mut families = waiting.collect();
        families.extend(in_flight.collect());
        families
    }
}

/// (waiting, in flight) of every live pool, summed per broker address.
fn per_broker() -> BTreeMap<String, (usize, usize)> {
    // Counts read under the registry lock (it is never held across an await,
    // and they are atomics); the pools stay alive while it is held.
    let pools = lock(&POOLS);
    let mut brokers: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for ((broker, _limit), pool) in pools.iter() {
        if let Some(pool) = pool.upgrade() {
            let stats = pool.stats();
            let entry = brokers.entry(broker.clone()).or_default();
            entry.0 += stats.waiting;
            entry.1 += stats.in_flight;
        }
    }
    brokers
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
