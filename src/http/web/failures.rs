//! Basic auth's failed-attempt budget, per client address.
//!
//! Design: sans-I/O — every method takes the `Instant` it acts at, and the
//! auth module calls them. Each source (an IPv4 address, an IPv6 /64, or one
//! shared bucket for requests whose address is not known) has a bucket of
//! [`BURST`] attempts that refills one per [`REFILL`]. An attempt that would
//! run bcrypt takes one token *before* it is queued; a pass gives it back, so
//! only failures (and attempts still in flight) use the budget. With the
//! bucket empty the source is refused without hashing, and told when to come
//! back.
//!
//! A source whose bucket is full — nothing failed lately and nothing in
//! flight — is *clean*: its attempt is queued ahead of the others (see
//! `hash_slots`), which is what lets a correct login through a wrong-password
//! flood from other addresses.
//!
//! It must never grow without bound: at most [`MAX_SOURCES`] sources are
//! tracked; full buckets are forgotten (a full bucket is the same as none),
//! and when every slot holds a source with failures, new sources share one
//! overflow bucket.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How many attempts a source may have failed (or in flight) at once.
pub(crate) const BURST: u32 = 5;

/// How long a source waits for one more attempt once its budget is used.
pub(crate) const REFILL: Duration = Duration::from_secs(12);

/// How many sources with failures are tracked one by one.
const MAX_SOURCES: usize = 4096;

/// Who an attempt is counted against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// An IPv4 address (IPv4-mapped IPv6 included).
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address: one host usually has a whole /64.
    V6([u8; 8]),
    /// No address known, or more sources than [`MAX_SOURCES`]: one bucket.
    Shared,
}

impl Source {
    pub(crate) fn of(address: Option<IpAddr>) -> Source {
        match address.map(|a| a.to_canonical()) {
            Some(IpAddr::V4(v4)) => Source::V4(v4.octets()),
            Some(IpAddr::V6(v6)) => {
                let mut prefix = [0; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                Source::V6(prefix)
            }
            None => Source::Shared,
        }
    }
}

/// What [`FailureBudget::charge`] decided.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Charge {
    /// Charged; the source had a full bucket.
    Clean,
    /// Charged; the source has failures or attempts in flight.
    Suspect,
    /// Not charged: the budget is used up; one more attempt after this long.
    Refused { retry_after: Duration },
}

/// The buckets of the sources with failures (or attempts in flight).
#[derive(Debug, Default)]
pub(crate) struct FailureBudget {
    buckets: HashMap<Source, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(BURST),
            at: now,
        }
    }

    /// The bucket as it is at `now`, refilled.
    fn at(self, now: Instant) -> Bucket {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() / REFILL.as_secs_f64();
        Bucket {
            tokens: (self.tokens + earned).min(f64::from(BURST)),
            at: now.max(self.at),
        }
    }

    fn is_full(self) -> bool {
        self.tokens >= f64::from(BURST)
    }
}

impl FailureBudget {
    /// Takes one attempt from `source`'s budget, if there is one.
    pub(crate) fn charge(&mut self, source: Source, now: Instant) -> Charge {
        let source = self.tracked(source, now);
        let bucket = self
            .buckets
            .get(&source)
            .map_or(Bucket::full(now), |b| b.at(now));
        if bucket.tokens < 1.0 {
            self.buckets.insert(source, bucket);
            return Charge::Refused {
                retry_after: REFILL.mul_f64(1.0 - bucket.tokens),
            };
        }
        let clean = bucket.is_full();
        self.buckets.insert(
            source,
            Bucket {
                tokens: bucket.tokens - 1.0,
                at: bucket.at,
            },
        );
        if clean {
            Charge::Clean
        } else {
            Charge::Suspect
        }
    }

    /// Gives back an attempt [`charge`](Self::charge)d to `source` that did
    /// not fail: it passed, or no hash ran.
    pub(crate) fn refund(&mut self, source: Source, now: Instant) {
        let Some(bucket) = self.buckets.get(&source).map(|b| b.at(now)) else {
            return;
        };
        let bucket = Bucket {
            tokens: (bucket.tokens + 1.0).min(f64::from(BURST)),
            at: bucket.at,
        };
        if bucket.is_full() {
            self.buckets.remove(&source);
        } else {
            self.buckets.insert(source, bucket);
        }
    }

    /// `source`, or [`Source::Shared`] when it is new and there is no room
    /// for it even after forgetting the full buckets.
    fn tracked(&mut self, source: Source, now: Instant) -> Source {
        if self.buckets.len() < MAX_SOURCES || self.buckets.contains_key(&source) {
            return source;
        }
        self.buckets.retain(|_, bucket| !bucket.at(now).is_full());
        if self.buckets.len() < MAX_SOURCES {
            source
        } else {
            Source::Shared
        }
    }

    #[cfg(test)]
    fn tracked_sources(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(last: u8) -> Source {
        Source::of(Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))))
    }

    #[test]
    fn a_source_gets_its_burst_then_is_refused_until_one_attempt_refills() {
        let mut budget = FailureBudget::default();
        let start = Instant::now();
        assert_eq!(budget.charge(v4(1), start), Charge::Clean);
        for _ in 1..BURST {
            assert_eq!(budget.charge(v4(1), start), Charge::Suspect);
        }
        assert_eq!(
            budget.charge(v4(1), start),
            Charge::Refused {
                retry_after: REFILL
            }
        );
        let half = start + REFILL / 2;
        assert_eq!(
            budget.charge(v4(1), half),
            Charge::Refused {
                retry_after: REFILL / 2
            }
        );
        assert_eq!(budget.charge(v4(1), start + REFILL), Charge::Suspect);
        // Another address is not affected.
        assert_eq!(budget.charge(v4(2), start), Charge::Clean);
    }

    #[test]
    fn a_pass_gives_its_attempt_back_and_a_full_bucket_is_forgotten() {
        let mut budget = FailureBudget::default();
        let now = Instant::now();
        for _ in 0..10 * BURST {
            assert_eq!(budget.charge(v4(1), now), Charge::Clean);
            budget.refund(v4(1), now);
        }
        assert_eq!(budget.tracked_sources(), 0);
        // Two in flight: the second is not clean.
        assert_eq!(budget.charge(v4(1), now), Charge::Clean);
        assert_eq!(budget.charge(v4(1), now), Charge::Suspect);
    }

    #[test]
    fn a_source_is_clean_again_once_its_failures_have_refilled() {
        let mut budget = FailureBudget::default();
        let start = Instant::now();
        assert_eq!(budget.charge(v4(1), start), Charge::Clean);
        assert_eq!(budget.charge(v4(1), start + REFILL / 2), Charge::Suspect);
        assert_eq!(budget.charge(v4(1), start + REFILL * 3), Charge::Clean);
    }

    #[test]
    fn ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(
            Source::of(Some(IpAddr::V6(a))),
            Source::of(Some(IpAddr::V6(b)))
        );
        assert_ne!(
            Source::of(Some(IpAddr::V6(a))),
            Source::of(Some(IpAddr::V6(c)))
        );
        let mapped = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped();
        assert_eq!(Source::of(Some(IpAddr::V6(mapped))), v4(1));
        assert_eq!(Source::of(None), Source::Shared);
    }

    #[test]
    fn beyond_the_tracked_sources_new_ones_share_one_bucket() {
        let mut budget = FailureBudget::default();
        let now = Instant::now();
        for i in 0..MAX_SOURCES {
            let source = Source::V4((i as u32).to_be_bytes());
            assert_eq!(budget.charge(source, now), Charge::Clean);
        }
        assert_eq!(budget.tracked_sources(), MAX_SOURCES);
        let newcomer = |i: u32| Source::V4((u32::MAX - i).to_be_bytes());
        for i in 0..BURST {
            assert_ne!(
                budget.charge(newcomer(i), now),
                Charge::Refused {
                    retry_after: REFILL
                }
            );
        }
        assert!(matches!(
            budget.charge(newcomer(99), now),
            Charge::Refused { .. }
        ));
        assert_eq!(
            budget.tracked_sources(),
            MAX_SOURCES + 1,
            "plus the shared one"
        );
        // Once the tracked ones have refilled, they are forgotten to make room.
        let later = now + REFILL * BURST;
        assert_eq!(budget.charge(newcomer(100), later), Charge::Clean);
        assert_eq!(budget.tracked_sources(), 1);
    }
}
