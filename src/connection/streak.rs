//! A run of failures of one connection, without I/O: when the backoff starts
//! over, and what to log at the default level.
//!
//! - **Stable period.** A connection counts as established only after it has
//!   stayed up for [`STABLE_AFTER`]. The reconnect backoff starts over only
//!   then, so a broker that accepts and at once hangs up (another client with
//!   the same client id, an ACL kick, a load balancer's idle cut) is retried
//!   with a growing delay, not ~13 times a second.
//! - **One warning per streak.** The first failed connect attempt of a streak
//!   is a `warn` with its reason, then at most one reminder with the count
//!   every [`REMIND_EVERY`]; the next connect is an `info`. A connection the
//!   broker closes right after accepting it is warned about once per streak,
//!   with its likely causes.

use std::time::{Duration, Instant};

use crate::events::FailureReason;

/// How long a connection must stay up before it counts as established: the
/// backoff starts over and a loss begins a new streak.
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(10);

/// The shortest time between two reminders of a streak that goes on.
pub(crate) const REMIND_EVERY: Duration = Duration::from_secs(300);

/// What the driver should log about a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    /// The first failed attempt of a streak.
    First,
    /// The streak goes on: this many failures since it began.
    Reminder { failures: u64, since: Duration },
    /// The broker closed the connection right after accepting it, for the
    /// first time in this streak.
    ClosedAfterConnect,
    /// Nothing at the default level.
    Quiet,
}

/// The failures since the connection was last established.
#[derive(Debug, Default)]
pub(crate) struct Streak {
    /// When the first failure of the streak happened, if there is one.
    began: Option<Instant>,
    failures: u64,
    warned_at: Option<Instant>,
    causes_told: bool,
    recovery_told: bool,
    up_since: Option<Instant>,
}

/// What a failure means for the backoff and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The connection had been established: start the backoff over.
    pub(crate) new_streak: bool,
    pub(crate) notice: Notice,
}

impl Streak {
    /// The broker accepted CONNECT at `now`. Returns the failures of the
    /// streak the first time it connects again (to log the recovery).
    pub(crate) fn connected(&mut self, now: Instant) -> Option<(u64, Duration)> {
        self.up_since = Some(now);
        let began = self.began?;
        if self.recovery_told {
            return None;
        }
        self.recovery_told = true;
        Some((self.failures, now.saturating_duration_since(began)))
    }

    /// An attempt failed or the connection was lost at `now`; `was_up` says
    /// which.
    pub(crate) fn failed(&mut self, reason: FailureReason, was_up: bool, now: Instant) -> Failure {
        let up_since = self.up_since.take();
        let new_streak = was_up
            && up_since.is_some_and(|since| now.saturating_duration_since(since) >= STABLE_AFTER);
        if new_streak {
            *self = Self::default();
        }
        let began = *self.began.get_or_insert(now);
        self.failures += 1;
        let notice = if reason == FailureReason::ClosedAfterConnect {
            if self.causes_told {
                Notice::Quiet
            } else {
                self.causes_told = true;
                self.warned_at = Some(now);
                Notice::ClosedAfterConnect
            }
        } else if was_up {
            // A loss is logged as a status change already; the attempts after
            // it are the streak.
            Notice::Quiet
        } else {
            match self.warned_at {
                None => {
                    self.warned_at = Some(now);
                    Notice::First
                }
                Some(at) if now.saturating_duration_since(at) >= REMIND_EVERY => {
                    self.warned_at = Some(now);
                    Notice::Reminder {
                        failures: self.failures,
                        since: now.saturating_duration_since(began),
                    }
                }
                Some(_) => Notice::Quiet,
            }
        };
        Failure { new_streak, notice }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureReason as R;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_first_failed_attempt_warns_then_one_reminder_every_five_minutes() {
        let mut streak = Streak::default();
        let t0 = Instant::now();
        assert_eq!(
            streak.failed(R::NotAuthorized, false, t0).notice,
            Notice::First
        );
        for i in 1..10 {
            let failure = streak.failed(R::NotAuthorized, false, t0 + s(i * 30));
            assert_eq!(failure.notice, Notice::Quiet, "attempt {i}");
        }
        assert_eq!(
            streak.failed(R::NotAuthorized, false, t0 + s(300)).notice,
            Notice::Reminder {
                failures: 11,
                since: s(300)
            }
        );
        assert_eq!(
            streak.failed(R::NotAuthorized, false, t0 + s(330)).notice,
            Notice::Quiet
        );
    }

    #[test]
    fn the_recovery_is_told_once_with_the_count() {
        let mut streak = Streak::default();
        let t0 = Instant::now();
        assert_eq!(streak.connected(t0), None, "no streak: nothing to tell");
        streak.failed(R::ConnectionRefused, true, t0 + s(1));
        streak.failed(R::ConnectionRefused, false, t0 + s(2));
        assert_eq!(streak.connected(t0 + s(4)), Some((2, s(3))));
        streak.failed(R::ClosedAfterConnect, true, t0 + s(5));
        assert_eq!(streak.connected(t0 + s(6)), None, "told once per streak");
    }

    #[test]
    fn a_broker_that_accepts_then_drops_keeps_one_streak_and_is_warned_about_once() {
        let mut streak = Streak::default();
        let t0 = Instant::now();
        let mut notices = Vec::new();
        for i in 0..20 {
            streak.connected(t0 + s(i));
            let failure = streak.failed(R::ClosedAfterConnect, true, t0 + s(i) + s(1) / 100);
            assert!(!failure.new_streak, "never up for the stable period");
            notices.push(failure.notice);
        }
        assert_eq!(notices[0], Notice::ClosedAfterConnect);
        assert!(
            notices[1..].iter().all(|n| *n == Notice::Quiet),
            "{notices:?}"
        );
    }

    #[test]
    fn only_a_connection_up_for_the_stable_period_starts_the_backoff_over() {
        let mut streak = Streak::default();
        let t0 = Instant::now();
        streak.failed(R::ConnectionRefused, false, t0);
        streak.connected(t0 + s(1));
        let early = streak.failed(R::ClosedByBroker, true, t0 + s(1) + STABLE_AFTER / 2);
        assert!(!early.new_streak);
        streak.connected(t0 + s(20));
        let late = streak.failed(R::ClosedByBroker, true, t0 + s(20) + STABLE_AFTER);
        assert!(late.new_streak);
        assert_eq!(
            streak
                .failed(R::ConnectionRefused, false, t0 + s(40))
                .notice,
            Notice::First,
            "a new streak warns again"
        );
    }

    #[test]
    fn a_loss_itself_is_quiet_the_attempts_after_it_warn() {
        let mut streak = Streak::default();
        let t0 = Instant::now();
        streak.connected(t0);
        let loss = streak.failed(R::ClosedByBroker, true, t0 + s(60));
        assert_eq!(loss.notice, Notice::Quiet);
        assert_eq!(
            streak
                .failed(R::ConnectionRefused, false, t0 + s(61))
                .notice,
            Notice::First
        );
    }
}
