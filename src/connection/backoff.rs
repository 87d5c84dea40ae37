//! Reconnect delays: capped exponential growth with jitter.
//!
//! rumqttc reconnects as soon as `poll()` is called again after an error, so
//! without this a dead broker would see thousands of attempts a second. The
//! policy is a few lines with one rule worth keeping (delays never shrink before
//! the cap), which is why it is written here rather than taken from a crate.

use std::time::Duration;

/// How long to wait between reconnect attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure. Defaults to 100 ms.
    pub initial: Duration,
    /// The longest delay. Defaults to 30 s.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

/// The delays of one run of failures; reset once a connection has stayed up
/// for the stable period ([`super::streak::STABLE_AFTER`]), not at CONNACK.
#[derive(Debug)]
pub(crate) struct Delays {
    policy: Backoff,
    ceiling: Duration,
}

impl Delays {
    pub(crate) fn new(policy: Backoff) -> Self {
        let policy = Backoff {
            initial: policy.initial.max(Duration::from_millis(1)),
            max: policy.max.max(policy.initial),
        };
        Self {
            policy,
            ceiling: policy.initial,
        }
    }

    /// The next delay, drawn uniformly from the upper half of a ceiling that
    /// doubles each time up to `max`. "Equal jitter": clients that failed
    /// together spread out, yet each delay is at least as long as the one
    /// before it until the cap is reached.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.next_with(fastrand::f64())
    }

    /// As [`Delays::next_delay`] with the random draw `unit` in `[0, 1)` given.
    pub(crate) fn next_with(&mut self, unit: f64) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (ceiling * 2).min(self.policy.max);
        ceiling.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    /// Back to the initial delay.
    pub(crate) fn reset(&mut self) {
        self.ceiling = self.policy.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The delays of a backoff from `initial_ms` up to `max_ms`.
    fn delays(initial_ms: u64, max_ms: u64) -> Delays {
        Delays::new(Backoff {
            initial: ms(initial_ms),
            max: ms(max_ms),
        })
    }

    #[test]
    fn doubles_up_to_the_cap() {
        let mut delays = delays(100, 1000);
        let top: Vec<_> = (0..6).map(|_| delays.next_with(1.0)).collect();
        assert_eq!(
            top,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
    }

    #[test]
    fn jitter_stays_in_the_upper_half_and_never_shrinks_before_the_cap() {
        let mut delays = delays(100, 10_000);
        let mut previous = Duration::ZERO;
        for unit in [0.99, 0.0, 0.7, 0.0, 0.3, 0.0] {
            let delay = delays.next_with(unit);
            assert!(delay >= previous, "{delay:?} < {previous:?}");
            previous = delay;
        }
        assert_eq!(delays.next_with(0.0), ms(3200));
    }

    #[test]
    fn never_exceeds_the_cap() {
        let mut delays = delays(300, 500);
        for _ in 0..20 {
            assert!(delays.next_delay() <= ms(500));
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut delays = Delays::new(Backoff::default());
        delays.next_with(1.0);
        delays.next_with(1.0);
        delays.reset();
        assert_eq!(delays.next_with(1.0), ms(100));
    }

    #[test]
    fn a_max_below_initial_is_raised_to_initial() {
        let mut delays = delays(200, 50);
        assert_eq!(delays.next_with(1.0), ms(200));
        assert_eq!(delays.next_with(1.0), ms(200));
    }
}
