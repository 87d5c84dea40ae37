//! What one [`Events::dispatch`] costs per event, each scenario against raw
//! tokio channels measured in the same run. Figures and method: BENCHMARKS.md,
//! section "Dispatch".
//!
//! Groups (`target/criterion/<group>/<bench>/new/estimates.json`):
//!
//! * `dispatch_a` — one wildcard subscription + one registered for the client.
//! * `dispatch_b` — 100 wildcard subscriptions.
//! * `dispatch_c_100`, `dispatch_c_10000` — that many clients, each with its own
//!   subscription, plus one wildcard one; dispatches visit every client in a
//!   scrambled order.
//! * `dispatch_d_full` — the topology of (a) with both queues full: the drop path.
//! * `dispatch_e_contended` — the topology of (a) while a second thread
//!   dispatches for another client through the same hub and wildcard queue.
//! * `dispatch_parts` — the pieces dispatch is made of, to explain the above.
//!
//! In each group `hub` is `Events::dispatch`, `try_send_single` one
//! `mpsc::Sender::try_send` of a clone of the same `Message`, and `raw_fanout`
//! the same fan-out done by hand: one `try_send` of a clone per queue the hub
//! delivers to.
//!
//! Queues never fill during (a)–(c) and (e): every benchmark times its
//! operations in chunks of [`CHUNK`] and drains the queues between chunks, with
//! the clock stopped. Each sample then checks that nothing was dropped (the
//! hub's counters; a baseline send that fails panics), so a figure can't silently
//! be the drop path. (d) measures the drop path on purpose.
//!
//! The contended benchmarks (group (e) and `*_contended` parts) count only the
//! chunks during which neither thread was switched out and the other thread
//! really ran (see [`contended`]), and print how well the two overlapped.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::hint::black_box;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use mqtt_pulse::events::{
    ClientFilter, ClientId, DEFAULT_QUEUE_CAPACITY, Event, EventKind, Events, Message, Subscription,
};
use tokio::sync::mpsc;

/// The kind dispatched everywhere: keep-alive round trips are the frequent
/// event (status changes also take the hub's status mutex, and are rare).
const KIND: EventKind = EventKind::PingResponse;

/// Operations timed between two drains. Half the default queue capacity, so a
/// queue holds at most this many messages: (a)–(c) never come near a full queue.
const CHUNK: u64 = 512;

/// Length of the table of client positions (a power of two, ≥ the most clients).
const ORDER_LEN: usize = 16_384;

/// Step between consecutive clients in the order table: coprime to the client
/// counts used (checked), so it visits every client.
const STRIDE: usize = 7_919;

fn event() -> Event {
    Event::PingResponse(Duration::from_micros(850))
}

fn message(client_id: &ClientId) -> Message {
    Message {
        client_id: client_id.clone(),
        event: event(),
        at: SystemTime::now(),
        reason: None,
    }
}

fn client(i: usize) -> ClientId {
    ClientId::from(format!("plant-{:02}/probe-{i:05}", i % 16))
}

/// Which client the `i`-th operation is for, out of `n`: a table read, so the
/// timed loop has no division in it.
fn order(n: usize) -> Vec<u32> {
    assert!(n <= ORDER_LEN && gcd(STRIDE, n) == 1);
    (0..ORDER_LEN)
        .map(|j| u32::try_from(j * STRIDE % n).unwrap())
        .collect()
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn at(order: &[u32], i: u64) -> usize {
    order[i as usize & (ORDER_LEN - 1)] as usize
}

/// Runs `op(0..iters)` and returns the time spent in it: timed in chunks of at
/// most [`CHUNK`] operations, with `drain(range of the chunk)` called between
/// chunks while the clock is stopped.
fn timed_chunks(iters: u64, op: impl Fn(u64), mut drain: impl FnMut(Range<u64>)) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let chunk = done..done + CHUNK.min(iters - done);
        let start = Instant::now();
        for i in chunk.clone() {
            op(i);
        }
        total += start.elapsed();
        drain(chunk.clone());
        done = chunk.end;
    }
    total
}

fn spin_until(mut ready: impl FnMut() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        spins += 1;
        if spins.is_multiple_of(1 << 20) {
            // Milliseconds: not a round gap but a descheduled peer. Give way.
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// What [`contended`] measured.
#[derive(Clone, Copy, Default)]
struct Overlap {
    /// Operations of each thread during the chunks counted of 256 or more
    /// (in shorter ones, starting and stopping the other thread weighs).
    ops: u64,
    other_ops: u64,
    /// Chunks counted; of those, counted only because they had been re-run
    /// [`MAX_RERUNS`] times; and chunks timed but not counted.
    counted: u64,
    forced: u64,
    rerun: u64,
}

/// How many times the calling thread has been scheduled onto a CPU (the third
/// field of `/proc/thread-self/schedstat`): unchanged across a stretch of code
/// means it ran it without being switched out. `None` where there is no such file.
fn times_scheduled() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Consecutive re-runs of a chunk after which each further one waits a
/// millisecond first, leaving the CPUs to whatever keeps switching us out.
const RERUNS_BEFORE_BACKOFF: u32 = 64;

/// Consecutive re-runs of a chunk after which it is counted anyway, so that a
/// starved machine makes the benchmark slow, not endless (the printed overlap
/// line says how many were).
const MAX_RERUNS: u32 = 5_000;

/// Like [`timed_chunks`] with chunks of `chunk` operations (`drain` between
/// chunks, clock stopped), while a second thread runs `other_op` in a loop
/// during each timed chunk. Each chunk is a handshake: the other thread is
/// released, notes how often it has been scheduled, starts its loop and says
/// so; only then is the clock started and the measured thread runs its chunk.
/// The other thread stops when the chunk ends, or after `2 * chunk`
/// operations, so that queues stay bounded.
///
/// On two busy cores either thread is sometimes switched out: a chunk timed
/// then measures no contention, or time off the CPU. So a chunk is drained,
/// dropped from the time and run again if either thread was switched out
/// during it (see [`times_scheduled`]), or if, in a chunk of 64 operations or
/// more, the other thread did less than a quarter as many as the measured one
/// (it runs the same kind of operation, so full overlap is about as many, but a
/// contended cache line is not shared fairly: fewer is not a sign of absence).
/// Re-running selects no operation by its cost, only chunks during which both
/// threads held a CPU. (A vCPU stalled by the hypervisor is not seen.)
fn contended(
    iters: u64,
    chunk: u64,
    main_op: &(impl Fn(u64) + Sync),
    other_op: &(impl Fn(u64) + Sync),
    mut drain: impl FnMut(),
) -> (Duration, Overlap) {
    let go = AtomicU64::new(0);
    let running = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let round_ops = AtomicU64::new(0);
    let other_switched = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let quit = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let (mut seen, mut ops) = (0, 0u64);
            loop {
                spin_until(|| go.load(Ordering::Acquire) != seen);
                seen = go.load(Ordering::Acquire);
                if quit.load(Ordering::Acquire) {
                    return;
                }
                let scheduled = times_scheduled();
                running.store(seen, Ordering::Release);
                let (start, limit) = (ops, ops + 2 * chunk);
                while ops < limit && !stop.load(Ordering::Relaxed) {
                    other_op(ops);
                    ops += 1;
                }
                round_ops.store(ops - start, Ordering::Relaxed);
                other_switched.store(times_scheduled() != scheduled, Ordering::Relaxed);
                done.store(seen, Ordering::Release);
            }
        });
        let (mut total, mut overlap, mut round, mut reruns, mut i) =
            (Duration::ZERO, Overlap::default(), 0, 0, 0);
        while i < iters {
            let chunk = i..i + chunk.min(iters - i);
            if reruns >= RERUNS_BEFORE_BACKOFF {
                std::thread::sleep(Duration::from_millis(1));
            }
            stop.store(false, Ordering::Relaxed);
            let scheduled = times_scheduled();
            round += 1;
            go.store(round, Ordering::Release);
            spin_until(|| running.load(Ordering::Acquire) == round);
            let start = Instant::now();
            for j in chunk.clone() {
                main_op(j);
            }
            let elapsed = start.elapsed();
            stop.store(true, Ordering::Relaxed);
            let switched = times_scheduled() != scheduled;
            spin_until(|| done.load(Ordering::Acquire) == round);
            drain();
            let other = round_ops.load(Ordering::Relaxed);
            let n = chunk.end - chunk.start;
            // In a chunk of a few operations the other thread's count is noise.
            let enough = n < 64 || 4 * other >= n;
            let good = !switched && !other_switched.load(Ordering::Relaxed) && enough;
            if !good && reruns < MAX_RERUNS {
                overlap.rerun += 1;
                reruns += 1;
                continue;
            }
            overlap.forced += u64::from(!good);
            reruns = 0;
            total += elapsed;
            if n >= 256 {
                overlap.ops += n;
                overlap.other_ops += other;
            }
            overlap.counted += 1;
            i = chunk.end;
        }
        quit.store(true, Ordering::Release);
        go.store(round + 1, Ordering::Release);
        (total, overlap)
    })
}

fn drain_sub(sub: &mut Subscription) {
    while sub.try_recv().is_ok() {}
}

fn drain_rx(rx: &mut mpsc::Receiver<Message>) {
    while rx.try_recv().is_ok() {}
}

fn channels(
    k: usize,
    capacity: usize,
) -> (Vec<mpsc::Sender<Message>>, Vec<mpsc::Receiver<Message>>) {
    (0..k).map(|_| mpsc::channel(capacity)).unzip()
}

/// A baseline send. A full queue would make the figure the drop path, so it
/// panics instead (a predictable branch, as the hub has one).
#[inline(always)]
fn send(tx: &mpsc::Sender<Message>, m: &Message) {
    if tx.try_send(m.clone()).is_err() {
        panic!("baseline queue full: the figure would be the drop path");
    }
}

/// The hub delivered every dispatch to exactly `fanout` queues, dropping none.
fn check(events: &Events, fanout: u64) {
    let s = events.stats(KIND);
    assert_eq!(
        s.dropped, 0,
        "a hub queue filled up: the figure would be the drop path"
    );
    assert_eq!(s.delivered, fanout * s.dispatched, "unexpected fan-out");
}

/// (a) and (b): `wildcards` wildcard subscriptions, plus one registered for the
/// dispatched client if `own`.
fn fanout(c: &mut Criterion, group: &str, wildcards: usize, own: bool) {
    let mut g = c.benchmark_group(group);
    let id = client(0);
    let k = wildcards + usize::from(own);

    let events = Events::new();
    let mut subs: Vec<Subscription> = (0..wildcards)
        .map(|_| events.register(ClientFilter::Any, KIND))
        .collect();
    if own {
        subs.push(events.register(&id, KIND));
    }
    g.bench_function("hub", |b| {
        b.iter_custom(|iters| {
            let t = timed_chunks(
                iters,
                |_| events.dispatch(black_box(&id), black_box(event())),
                |_| subs.iter_mut().for_each(drain_sub),
            );
            check(&events, k as u64);
            t
        })
    });

    let m = message(&id);
    let (txs, mut rxs) = channels(k, DEFAULT_QUEUE_CAPACITY);
    g.bench_function("try_send_single", |b| {
        b.iter_custom(|iters| {
            timed_chunks(
                iters,
                |_| send(&txs[0], black_box(&m)),
                |_| drain_rx(&mut rxs[0]),
            )
        })
    });
    g.bench_function("raw_fanout", |b| {
        b.iter_custom(|iters| {
            timed_chunks(
                iters,
                |_| {
                    let m = black_box(&m);
                    txs.iter().for_each(|tx| send(tx, m));
                },
                |_| rxs.iter_mut().for_each(drain_rx),
            )
        })
    });
    g.finish();
}

/// (c): `n` clients, each with a subscription of its own, plus one wildcard
/// subscription; each dispatch is for the next client in a scrambled order.
fn many_clients(c: &mut Criterion, n: usize) {
    let mut g = c.benchmark_group(format!("dispatch_c_{n}"));
    let ids: Vec<ClientId> = (0..n).map(client).collect();
    let order = order(n);

    let events = Events::new();
    let mut wild = events.register(ClientFilter::Any, KIND);
    let mut subs: Vec<Subscription> = ids.iter().map(|id| events.register(id, KIND)).collect();
    g.bench_function("hub", |b| {
        b.iter_custom(|iters| {
            let t = timed_chunks(
                iters,
                |i| events.dispatch(black_box(&ids[at(&order, i)]), black_box(event())),
                |chunk| {
                    drain_sub(&mut wild);
                    chunk.for_each(|i| drain_sub(&mut subs[at(&order, i)]));
                },
            );
            check(&events, 2);
            t
        })
    });

    // The baselines touch the same per-client memory the hub does (the client
    // id's `Arc`, the client's own queue), found by index instead of by id.
    let messages: Vec<Message> = ids.iter().map(message).collect();
    let (txs, mut rxs) = channels(n, DEFAULT_QUEUE_CAPACITY);
    let (wild_tx, mut wild_rx) = mpsc::channel(DEFAULT_QUEUE_CAPACITY);
    g.bench_function("try_send_single", |b| {
        b.iter_custom(|iters| {
            timed_chunks(
                iters,
                |i| {
                    let j = at(&order, i);
                    send(&txs[j], black_box(&messages[j]));
                },
                |chunk| chunk.for_each(|i| drain_rx(&mut rxs[at(&order, i)])),
            )
        })
    });
    g.bench_function("raw_fanout", |b| {
        b.iter_custom(|iters| {
            timed_chunks(
                iters,
                |i| {
                    let j = at(&order, i);
                    let m = black_box(&messages[j]);
                    send(&wild_tx, m);
                    send(&txs[j], m);
                },
                |chunk| {
                    drain_rx(&mut wild_rx);
                    chunk.for_each(|i| drain_rx(&mut rxs[at(&order, i)]));
                },
            )
        })
    });

    // Not in the brief's table: the raw fan-out with the client's queue found
    // by id, as any hub must do.
    // * `_by_id`: a map from id to the sender itself.
    // * `_by_id_hub_layout`: the hub's chain of pointers (id -> per-kind `Vec`
    //   -> `Arc` holding the sender), the `Vec`s and `Arc`s allocated one after
    //   the other, after all the channels.
    // * `_by_id_hub_alloc`: the same chain, but each client's channel, `Arc`,
    //   map entry and `Vec` allocated together, in the order the hub allocates
    //   them when a subscription is made and registered.
    let by_id: HashMap<ClientId, mpsc::Sender<Message>> =
        ids.iter().cloned().zip(txs.iter().cloned()).collect();
    bench_by_id(
        &mut g,
        "raw_fanout_by_id",
        &order,
        &messages,
        &mut rxs,
        |m| {
            send(&wild_tx, m);
            send(&by_id[m.client_id.as_str()], m);
        },
        || drain_rx(&mut wild_rx),
    );
    drop(by_id);
    let hub_layout: HubLayout = ids
        .iter()
        .cloned()
        .zip(
            txs.iter()
                .map(|tx| [Vec::new(), vec![Arc::new(tx.clone())]]),
        )
        .collect();
    bench_by_id(
        &mut g,
        "raw_fanout_by_id_hub_layout",
        &order,
        &messages,
        &mut rxs,
        |m| {
            send(&wild_tx, m);
            hub_layout[m.client_id.as_str()][1]
                .iter()
                .for_each(|tx| send(tx, m));
        },
        || drain_rx(&mut wild_rx),
    );
    drop((hub_layout, txs, rxs));
    let mut hub_alloc = HubLayout::default();
    let mut rxs: Vec<_> = ids
        .iter()
        .map(|id| {
            let (tx, rx) = mpsc::channel(DEFAULT_QUEUE_CAPACITY);
            let tx = Arc::new(tx);
            hub_alloc.entry(id.clone()).or_default()[1].push(tx);
            rx
        })
        .collect();
    bench_by_id(
        &mut g,
        "raw_fanout_by_id_hub_alloc",
        &order,
        &messages,
        &mut rxs,
        |m| {
            send(&wild_tx, m);
            hub_alloc[m.client_id.as_str()][1]
                .iter()
                .for_each(|tx| send(tx, m));
        },
        || drain_rx(&mut wild_rx),
    );
    g.finish();
}

type HubLayout = HashMap<ClientId, [Vec<Arc<mpsc::Sender<Message>>>; 2]>;

/// A raw fan-out of (c) that finds the client's queue by id: `fan_out(message)`
/// sends to the wildcard queue, emptied by `drain_wild`, and to the client's
/// own, one of `rxs`.
fn bench_by_id(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    order: &[u32],
    messages: &[Message],
    rxs: &mut [mpsc::Receiver<Message>],
    fan_out: impl Fn(&Message),
    mut drain_wild: impl FnMut(),
) {
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            timed_chunks(
                iters,
                |i| fan_out(black_box(&messages[at(order, i)])),
                |chunk| {
                    drain_wild();
                    chunk.for_each(|i| drain_rx(&mut rxs[at(order, i)]));
                },
            )
        })
    });
}

/// (d): the topology of (a) with both queues full, so every copy is dropped
/// (and counted). Nothing is drained: the queues stay full.
fn full_queues(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch_d_full");
    let id = client(0);
    let cap = DEFAULT_QUEUE_CAPACITY;

    let events = Events::new();
    let wild = events.register(ClientFilter::Any, KIND);
    let own = events.register(&id, KIND);
    (0..cap).for_each(|_| events.dispatch(&id, event()));
    assert!(wild.len() == cap && own.len() == cap);
    g.bench_function("hub", |b| {
        b.iter_custom(|iters| {
            let t = timed_chunks(
                iters,
                |_| events.dispatch(black_box(&id), black_box(event())),
                |_| {},
            );
            let s = events.stats(KIND);
            assert_eq!(s.delivered, 2 * cap as u64, "a full queue took a message");
            assert_eq!(s.dropped, 2 * (s.dispatched - cap as u64));
            t
        })
    });

    let m = message(&id);
    let (txs, rxs) = channels(2, cap);
    for tx in &txs {
        (0..cap).for_each(|_| send(tx, &m));
    }
    let send_full = |tx: &mpsc::Sender<Message>, m: &Message| {
        if tx.try_send(m.clone()).is_ok() {
            panic!("queue not full");
        }
    };
    g.bench_function("try_send_single", |b| {
        b.iter_custom(|iters| timed_chunks(iters, |_| send_full(&txs[0], black_box(&m)), |_| {}))
    });
    g.bench_function("raw_fanout", |b| {
        b.iter_custom(|iters| {
            timed_chunks(
                iters,
                |_| {
                    let m = black_box(&m);
                    txs.iter().for_each(|tx| send_full(tx, m));
                },
                |_| {},
            )
        })
    });
    g.finish();
    drop(rxs);
}

/// One contended benchmark (see [`contended`]): `check` runs after each sample.
/// Prints how many operations the other thread did per measured one in the
/// chunks counted (about 1.00 is full overlap), and the share of chunks re-run.
fn bench_contended(
    (group, g): (&str, &mut BenchmarkGroup<'_, WallTime>),
    name: &str,
    chunk: u64,
    main_op: &(impl Fn(u64) + Sync),
    other_op: &(impl Fn(u64) + Sync),
    mut drain: impl FnMut(),
    check: impl Fn(),
) {
    let mut sum = Overlap::default();
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let (t, overlap) = contended(iters, chunk, main_op, other_op, &mut drain);
            check();
            sum.ops += overlap.ops;
            sum.other_ops += overlap.other_ops;
            sum.counted += overlap.counted;
            sum.rerun += overlap.rerun;
            sum.forced += overlap.forced;
            t
        })
    });
    if sum.ops > 0 {
        let ratio = sum.other_ops as f64 / sum.ops as f64;
        let timed = (sum.counted + sum.rerun) as f64;
        let (rerun, forced) = (sum.rerun as f64 / timed, sum.forced as f64 / timed);
        eprintln!(
            "overlap {group}/{name}: {ratio:.2} other-thread operations per measured one; \
             chunks re-run {:.0}%, counted although switched out or short {:.1}%",
            100.0 * rerun,
            100.0 * forced
        );
    }
}

/// (e): the topology of (a) on this thread, for client `a`, while another
/// thread dispatches for client `b`, which has its own subscription and shares
/// the wildcard one: the read lock, the hub's counters and the wildcard queue
/// are written by both threads.
fn contention(c: &mut Criterion) {
    const GROUP: &str = "dispatch_e_contended";
    let mut g = c.benchmark_group(GROUP);
    let (a, b) = (client(0), client(1));
    // The wildcard queue takes up to CHUNK + 2 * CHUNK messages between drains.
    let cap = 4 * CHUNK as usize;

    let events = Events::with_queue_capacity(cap);
    let mut subs = [
        events.register(ClientFilter::Any, KIND),
        events.register(&a, KIND),
        events.register(&b, KIND),
    ];
    bench_contended(
        (GROUP, &mut g),
        "hub",
        CHUNK,
        &|_| events.dispatch(black_box(&a), black_box(event())),
        &|_| events.dispatch(black_box(&b), black_box(event())),
        || subs.iter_mut().for_each(drain_sub),
        || check(&events, 2),
    );

    let (ma, mb) = (message(&a), message(&b));
    // [wildcard, a's own, b's own]
    let (txs, mut rxs) = channels(3, cap);
    bench_contended(
        (GROUP, &mut g),
        "try_send_single",
        CHUNK,
        &|_| send(&txs[0], black_box(&ma)),
        &|_| send(&txs[0], black_box(&mb)),
        || drain_rx(&mut rxs[0]),
        || {},
    );
    bench_contended(
        (GROUP, &mut g),
        "raw_fanout",
        CHUNK,
        &|_| {
            let m = black_box(&ma);
            send(&txs[0], m);
            send(&txs[1], m);
        },
        &|_| {
            let m = black_box(&mb);
            send(&txs[0], m);
            send(&txs[2], m);
        },
        || rxs.iter_mut().for_each(drain_rx),
        || {},
    );
    g.finish();
}

const PARTS: &str = "dispatch_parts";

/// FxHash (rustc's hasher), to price the hash function of the client lookup.
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    // rustc-hash 2's multiply-add; its `finish` rotates the good high bits down.
    fn add(&mut self, word: u64) {
        self.0 = self
            .0
            .wrapping_add(word)
            .wrapping_mul(0xf135_7aea_2e62_a9c5);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.add(u64::from_le_bytes(word.try_into().unwrap()));
        }
        let mut last = [0u8; 8];
        last[..words.remainder().len()].copy_from_slice(words.remainder());
        self.add(u64::from_le_bytes(last) ^ bytes.len() as u64);
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

fn lookup<S: BuildHasher + Default>(c: &mut Criterion, name: &str, ids: &[ClientId]) {
    let order = order(ids.len());
    let map: HashMap<ClientId, usize, S> = ids.iter().cloned().zip(0..).collect();
    c.benchmark_group(PARTS).bench_function(name, |b| {
        b.iter_custom(|iters| {
            timed_chunks(
                iters,
                |i| {
                    black_box(map.get(black_box(ids[at(&order, i)].as_str())));
                },
                |_| {},
            )
        })
    });
}

/// The pieces of a dispatch, alone and with a second thread doing the same to
/// the same object.
fn parts(c: &mut Criterion) {
    let rwlock = RwLock::new(0u64);
    let mutex = Mutex::new(0u64);
    let counter = AtomicU64::new(0);
    let read = |_| {
        black_box(*rwlock.read().unwrap());
    };
    let lock = |_| {
        black_box(*mutex.lock().unwrap());
    };
    let add = |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    };

    let mut g = c.benchmark_group(PARTS);
    g.bench_function("system_time_now", |b| {
        b.iter_custom(|iters| {
            timed_chunks(
                iters,
                |_| {
                    black_box(SystemTime::now());
                },
                |_| {},
            )
        })
    });
    g.bench_function("rwlock_read", |b| {
        b.iter_custom(|iters| timed_chunks(iters, read, |_| {}))
    });
    g.bench_function("mutex_lock", |b| {
        b.iter_custom(|iters| timed_chunks(iters, lock, |_| {}))
    });
    g.bench_function("fetch_add_relaxed", |b| {
        b.iter_custom(|iters| timed_chunks(iters, add, |_| {}))
    });
    bench_contended(
        (PARTS, &mut g),
        "rwlock_read_contended",
        16 * CHUNK,
        &read,
        &read,
        || {},
        || {},
    );
    bench_contended(
        (PARTS, &mut g),
        "mutex_lock_contended",
        16 * CHUNK,
        &lock,
        &lock,
        || {},
        || {},
    );
    bench_contended(
        (PARTS, &mut g),
        "fetch_add_relaxed_contended",
        16 * CHUNK,
        &add,
        &add,
        || {},
        || {},
    );
    g.finish();

    let ids: Vec<ClientId> = (0..10_000).map(client).collect();
    lookup::<RandomState>(c, "lookup_10000_siphash", &ids);
    lookup::<BuildHasherDefault<FxHasher>>(c, "lookup_10000_fxhash", &ids);
}

fn scenarios(c: &mut Criterion) {
    fanout(c, "dispatch_a", 1, true);
    fanout(c, "dispatch_b", 100, false);
    many_clients(c, 100);
    many_clients(c, 10_000);
    full_queues(c);
    contention(c);
    parts(c);
}

criterion_group!(benches, scenarios);
criterion_main!(benches);
