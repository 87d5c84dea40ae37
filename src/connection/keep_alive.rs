//! When to send the next PINGREQ, without I/O.
//!
//! MQTT 3.1.1 §3.1.2.10: the client must send a control packet before the
//! keep-alive it announced in CONNECT has elapsed. rumqttc's own timer sends
//! PINGREQ *at* the keep-alive plus timer latency (1,006 ms at 1 s), which a
//! broker that enforces the interval exactly answers by closing the
//! connection. So the driver turns rumqttc's timer off once connected and
//! sends PINGREQ itself every [`PING_EVERY`] of the keep-alive, counted from
//! CONNACK and then from each PINGREQ written: a margin of a quarter
//! keep-alive for the CONNECT's trip and the timer's latency. The round trip
//! is still measured from the PINGREQ written to the PINGRESP read.

use std::time::{Duration, Instant};

/// The fraction of the keep-alive between two PINGREQs.
pub(crate) const PING_EVERY: f64 = 0.75;

/// The ping schedule of one connection.
#[derive(Debug)]
pub(crate) struct PingSchedule {
    interval: Duration,
    /// CONNACK or the last PINGREQ written, while connected.
    last: Option<Instant>,
    /// A PINGREQ was asked for and not yet written.
    requested: bool,
}

impl PingSchedule {
    /// The schedule for `keep_alive`; zero turns pinging off.
    pub(crate) fn new(keep_alive: Duration) -> Self {
        Self {
            interval: keep_alive.mul_f64(PING_EVERY),
            last: None,
            requested: false,
        }
    }

    /// The broker accepted CONNECT at `now`.
    pub(crate) fn connected(&mut self, now: Instant) {
        self.last = Some(now);
        self.requested = false;
    }

    /// A PINGREQ was written at `now`.
    pub(crate) fn ping_written(&mut self, now: Instant) {
        if self.last.is_some() {
            self.last = Some(now);
        }
        self.requested = false;
    }

    /// The driver asked for a PINGREQ; none is due again until it is written.
    pub(crate) fn requested(&mut self) {
        self.requested = true;
    }

    /// The connection is gone.
    pub(crate) fn lost(&mut self) {
        self.last = None;
        self.requested = false;
    }

    /// When the next PINGREQ is due; `None` while not connected, while one is
    /// requested but not written, or with keep-alive off.
    pub(crate) fn due(&self) -> Option<Instant> {
        if self.requested || self.interval.is_zero() {
            return None;
        }
        self.last.map(|last| last + self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_first_ping_is_due_three_quarters_of_a_keep_alive_after_connack() {
        let mut schedule = PingSchedule::new(Duration::from_secs(1));
        assert_eq!(schedule.due(), None, "not connected");
        let t0 = Instant::now();
        schedule.connected(t0);
        assert_eq!(schedule.due(), Some(t0 + ms(750)));
    }

    #[test]
    fn each_next_ping_counts_from_the_last_one_written() {
        let mut schedule = PingSchedule::new(Duration::from_secs(4));
        let t0 = Instant::now();
        schedule.connected(t0);
        schedule.requested();
        assert_eq!(schedule.due(), None, "asked for, not yet written");
        schedule.ping_written(t0 + ms(3010));
        assert_eq!(schedule.due(), Some(t0 + ms(6010)));
        assert!(
            ms(3000) < Duration::from_secs(4),
            "always inside the keep-alive"
        );
    }

    #[test]
    fn a_lost_connection_has_no_ping_due_and_zero_keep_alive_never_pings() {
        let mut schedule = PingSchedule::new(Duration::from_secs(1));
        let t0 = Instant::now();
        schedule.connected(t0);
        schedule.lost();
        assert_eq!(schedule.due(), None);
        schedule.ping_written(t0);
        assert_eq!(
            schedule.due(),
            None,
            "a late PINGREQ event does not reconnect"
        );

        let mut off = PingSchedule::new(Duration::ZERO);
        off.connected(t0);
        assert_eq!(off.due(), None);
    }
}
