//! The bookkeeping of probe messages without I/O: which sequence numbers are
//! out, since when, and what an arriving message means — received, out of
//! order, late or duplicate — or a silent one — lost.
//!
//! Design (as `link.rs`): methods take the time as an argument, change state
//! and return what to report; they never touch a socket, a clock, the hub or
//! a timer. The publisher and the receiver may be different connections (a
//! broker-to-broker path): the one says when a message was queued and
//! written ([`RoundTrips::queue`], [`RoundTrips::written`]), the other when
//! one arrived ([`RoundTrips::arrived`]); whoever owns the window owns its
//! timer ([`RoundTrips::deadline`], [`RoundTrips::expire`]).
//!
//! Memory is bounded: the window spans from the oldest message still out to
//! the newest, plus [`HISTORY`] settled ones remembered for late and
//! duplicate arrivals; at most [`MAX_OUT`] messages are out at once (a new
//! one is refused until one settles).

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::events::RoundTripOutcome;

/// Settled messages kept behind the oldest one still out, to tell a late or
/// duplicate arrival from one too old to tell (counted late).
pub(crate) const HISTORY: usize = 16;

/// The most messages out (queued or written, neither back nor lost) at once.
pub(crate) const MAX_OUT: usize = 256;

/// What the payload starts with: the format and its version.
const MAGIC: &str = "mqtt-pulse/1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Handed to the client at this instant, not yet written.
    Queued(Instant),
    /// Written at this instant; not back yet.
    Out(Instant),
    /// Came back (received or out of order).
    Back,
    /// Came back before its write was seen: on a path, the receiving
    /// connection's task can read the message before the publishing one has
    /// handled its own write event. Written (and so sent) when that event
    /// comes; measured from the queueing meanwhile (an upper bound).
    BackUnwritten,
    /// Not back within the timeout.
    Lost,
    /// Came back after it was counted lost.
    LateBack,
    /// Queued for a whole timeout and not written (the link was down):
    /// neither sent nor lost — unless it is written after all (a resumed
    /// session sends what was pending), which makes it sent from that write.
    Stale,
    /// Never to be written: a new session dropped the client's pending
    /// requests. Neither sent nor lost.
    Dropped,
}

impl Slot {
    fn is_settled(self) -> bool {
        !matches!(self, Slot::Queued(_) | Slot::Out(_))
    }
}

/// The probe messages of one probe or path.
#[derive(Debug)]
pub(crate) struct RoundTrips {
    /// Tells this window's messages from anyone else's on the same topic
    /// (another instance, an earlier run of this one).
    run: u64,
    timeout: Duration,
    /// The sequence number of `window[0]`.
    base: u64,
    window: VecDeque<Slot>,
    /// The highest sequence number that came back; 0 for none yet.
    highest_back: u64,
}

impl RoundTrips {
    /// An empty window for messages lost after `timeout`, tagged with `run`
    /// (a random number: see [`RoundTrips::new`]).
    pub(crate) fn with_run(run: u64, timeout: Duration) -> Self {
        Self {
            run,
            timeout,
            base: 1,
            window: VecDeque::new(),
            highest_back: 0,
        }
    }

    /// An empty window with a random run tag.
    pub(crate) fn new(timeout: Duration) -> Self {
        Self::with_run(fastrand::u64(..), timeout)
    }

    fn next_seq(&self) -> u64 {
        self.base + self.window.len() as u64
    }

    fn slot(&mut self, seq: u64) -> Option<&mut Slot> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.window.get_mut(index)
    }

    /// Queues the next message at `now` (wall clock `wall`): its sequence
    /// number and payload. `None` while [`MAX_OUT`] messages are out.
    pub(crate) fn queue(&mut self, now: Instant, wall: SystemTime) -> Option<(u64, String)> {
        let out = self.window.iter().filter(|slot| !slot.is_settled()).count();
        if out >= MAX_OUT {
            return None;
        }
        let seq = self.next_seq();
        self.window.push_back(Slot::Queued(now));
        Some((seq, encode(self.run, seq, wall)))
    }

    /// The messages not written (queued, or given up), oldest first.
    pub(crate) fn unwritten(&self) -> impl Iterator<Item = u64> + '_ {
        (self.base..)
            .zip(&self.window)
            .filter(|(_, slot)| matches!(slot, Slot::Queued(_) | Slot::Stale | Slot::BackUnwritten))
            .map(|(seq, _)| seq)
    }

    /// Message `seq` was written at `now`. `true` if it was waiting to be
    /// (queued, or given up while unwritten) and so is sent from now on, its
    /// timeout counted from this write; `false` for a message written before
    /// (a retransmission) or unknown.
    pub(crate) fn written(&mut self, seq: u64, now: Instant) -> bool {
        match self.slot(seq) {
            Some(slot @ Slot::BackUnwritten) => {
                *slot = Slot::Back;
                true
            }
            Some(slot @ (Slot::Queued(_) | Slot::Stale)) => {
                *slot = Slot::Out(now);
                true
            }
            _ => false,
        }
    }

    /// Every message queued and not written will never be: a new session
    /// dropped the client's pending requests.
    pub(crate) fn discard_unwritten(&mut self) {
        for slot in &mut self.window {
            if let Slot::BackUnwritten = slot {
                // It came back, so it was written; its write event is gone.
                *slot = Slot::Back;
            } else if let Slot::Queued(_) | Slot::Stale = slot {
                *slot = Slot::Dropped;
            }
        }
        self.trim();
    }

    /// When the next message out times out; `None` with none out.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        // Messages are queued and written in sequence order, so the oldest
        // one out times out first.
        self.window.iter().find_map(|slot| match *slot {
            Slot::Queued(at) | Slot::Out(at) => Some(at + self.timeout),
            _ => None,
        })
    }

    /// Settles every message whose timeout has passed at `now`: a written one
    /// is lost (its sequence number goes to `lost`), one never written is
    /// stale (sent only if it is written after all). Call it before [`arrived`](Self::arrived) with the same `now`.
    pub(crate) fn expire(&mut self, now: Instant, mut lost: impl FnMut(u64)) {
        let timeout = self.timeout;
        for (seq, slot) in (self.base..).zip(self.window.iter_mut()) {
            match *slot {
                Slot::Out(at) if now >= at + timeout => {
                    *slot = Slot::Lost;
                    lost(seq);
                }
                Slot::Queued(at) if now >= at + timeout => *slot = Slot::Stale,
                // Later ones were queued later: none of them is due either.
                Slot::Out(_) | Slot::Queued(_) => break,
                _ => {}
            }
        }
        self.trim();
    }

    /// A message with `payload` arrived at `now`: its sequence number and
    /// outcome, or `None` when it is not one of this window's (another run's,
    /// not a probe payload, or a number never sent).
    pub(crate) fn arrived(
        &mut self,
        payload: &[u8],
        now: Instant,
    ) -> Option<(u64, RoundTripOutcome)> {
        let (run, seq) = decode(payload)?;
        if run != self.run || seq >= self.next_seq() || seq == 0 {
            return None;
        }
        let highest_back = self.highest_back;
        let Some(slot) = self.slot(seq) else {
            // Settled and forgotten long ago: too old to tell whether it came
            // back before, but surely not in time.
            return Some((seq, RoundTripOutcome::Late));
        };
        let outcome = match *slot {
            // Written and yet not seen written: the write's event is still to
            // come. Measured from the queueing, an upper bound.
            Slot::Queued(at) | Slot::Out(at) => {
                *slot = match *slot {
                    Slot::Queued(_) => Slot::BackUnwritten,
                    _ => Slot::Back,
                };
                let rtt = now.saturating_duration_since(at);
                if seq < highest_back {
                    RoundTripOutcome::OutOfOrder(rtt)
                } else {
                    RoundTripOutcome::Received(rtt)
                }
            }
            Slot::Lost => {
                *slot = Slot::LateBack;
                RoundTripOutcome::Late
            }
            Slot::Back | Slot::LateBack | Slot::BackUnwritten => RoundTripOutcome::Duplicate,
            // Never seen written; if it was written after all, it is
            // certainly not a success.
            Slot::Stale | Slot::Dropped => RoundTripOutcome::Late,
        };
        self.highest_back = self.highest_back.max(seq);
        self.trim();
        Some((seq, outcome))
    }

    /// Forgets settled messages at the front beyond [`HISTORY`].
    fn trim(&mut self) {
        while self.window.len() > HISTORY
            && self.window.front().is_some_and(|slot| slot.is_settled())
        {
            self.window.pop_front();
            self.base += 1;
        }
    }

    /// How many messages are out (queued or written, not settled).
    #[cfg(test)]
    fn out(&self) -> usize {
        self.window.iter().filter(|slot| !slot.is_settled()).count()
    }
}

/// `mqtt-pulse/1 <run, 16 hex digits> <seq> <Unix time queued, µs>`: plain
/// text, so `mosquitto_sub` shows what a probe sends.
///
/// Written by hand into one allocation of the right size: `format!` here
/// grew its string three times and went through the formatting machinery,
/// about 2,800 instructions of the ~100,000 a round trip cost (callgrind).
fn encode(run: u64, seq: u64, wall: SystemTime) -> String {
    let micros = wall
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros());
    // MAGIC, 3 spaces, 16 hex digits, at most 20 + 39 decimal digits.
    let mut payload = String::with_capacity(MAGIC.len() + 3 + 16 + 20 + 39);
    payload.push_str(MAGIC);
    payload.push(' ');
    for shift in (0..16).rev() {
        let digit = ((run >> (shift * 4)) & 0xf) as u8;
        payload.push(char::from(b"0123456789abcdef"[usize::from(digit)]));
    }
    payload.push(' ');
    push_decimal(&mut payload, u128::from(seq));
    payload.push(' ');
    push_decimal(&mut payload, micros);
    payload
}

/// Appends `n` in decimal, without leading zeros; in `u64` arithmetic when
/// it fits (a `u128` division by ten is a library call).
fn push_decimal(out: &mut String, n: u128) {
    let mut digits = [0u8; 39];
    let mut at = digits.len();
    let mut digit = |value: u8| {
        at -= 1;
        digits[at] = b'0' + value;
    };
    match u64::try_from(n) {
        Ok(mut n) => loop {
            digit((n % 10) as u8);
            n /= 10;
            if n == 0 {
                break;
            }
        },
        Err(_) => {
            let mut n = n;
            loop {
                digit((n % 10) as u8);
                n /= 10;
                if n == 0 {
                    break;
                }
            }
        }
    }
    out.extend(digits[at..].iter().copied().map(char::from));
}

/// The run and sequence number of a probe payload; `None` for anything else.
///
/// It accepts what [`encode`] writes and what Rust's integer parsers took
/// before: the run as exactly 16 hex digits of either case, the sequence
/// number a decimal `u64` and the time a decimal `u128`, each optionally
/// after a `+`; no other field. Byte by byte, without a UTF-8 check or a
/// split: it runs for every message on a probe topic.
pub(crate) fn decode(payload: &[u8]) -> Option<(u64, u64)> {
    // A probe payload is short; anything long is not one, and is not parsed.
    if payload.len() > 96 {
        return None;
    }
    let rest = payload.strip_prefix(MAGIC.as_bytes())?.strip_prefix(b" ")?;
    let (run, rest) = split_field(rest)?;
    let (seq, rest) = split_field(rest?)?;
    let (micros, rest) = split_field(rest?)?;
    if rest.is_some() {
        return None;
    }
    if run.len() != 16 {
        return None;
    }
    let run = parse_u64(run, 16)?;
    let seq = parse_u64(seq, 10)?;
    // The time is not used, only checked; it fits a `u64` for 584,000 years.
    if parse_u64(micros, 10).is_none() && parse_u128(micros).is_none() {
        return None;
    }
    Some((run, seq))
}

/// The bytes before the first space, and those after it if there is one.
fn split_field(bytes: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    Some(match bytes.iter().position(|&b| b == b' ') {
        Some(at) => (&bytes[..at], Some(&bytes[at + 1..])),
        None => (bytes, None),
    })
}

/// The digits of a field: what follows an optional `+`; `None` if empty.
fn digits_of(field: &[u8]) -> Option<&[u8]> {
    let digits = field.strip_prefix(b"+").unwrap_or(field);
    (!digits.is_empty()).then_some(digits)
}

/// `field` (an optional `+`, then at least one digit of `radix`, 10 or 16)
/// as a `u64`; `None` if anything else or too large.
fn parse_u64(field: &[u8], radix: u32) -> Option<u64> {
    digits_of(field)?.iter().try_fold(0u64, |value, &byte| {
        let digit = char::from(byte).to_digit(radix)?;
        value
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))
    })
}

/// [`parse_u64`] in decimal for a `u128`.
fn parse_u128(field: &[u8]) -> Option<u128> {
    digits_of(field)?.iter().try_fold(0u128, |value, &byte| {
        let digit = char::from(byte).to_digit(10)?;
        value.checked_mul(10)?.checked_add(u128::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: u64 = 0x00c0_ffee_0000_0001;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn window() -> RoundTrips {
        RoundTrips::with_run(RUN, ms(1000))
    }

    /// Queues and writes one message at `at`; its payload.
    fn send(trips: &mut RoundTrips, at: Instant) -> (u64, String) {
        let (seq, payload) = trips.queue(at, SystemTime::now()).unwrap();
        assert!(trips.written(seq, at));
        (seq, payload)
    }

    fn lost_at(trips: &mut RoundTrips, now: Instant) -> Vec<u64> {
        let mut lost = Vec::new();
        trips.expire(now, |seq| lost.push(seq));
        lost
    }

    #[test]
    fn a_message_back_in_time_is_received_with_its_round_trip_from_the_write() {
        let mut trips = window();
        let t0 = Instant::now();
        let (seq, payload) = trips.queue(t0, SystemTime::now()).unwrap();
        assert_eq!(seq, 1);
        assert_eq!(trips.unwritten().collect::<Vec<_>>(), [1]);
        assert!(trips.written(seq, t0 + ms(5)));
        assert_eq!(trips.unwritten().count(), 0);
        assert_eq!(
            trips.arrived(payload.as_bytes(), t0 + ms(7)),
            Some((1, RoundTripOutcome::Received(ms(2))))
        );
        assert_eq!(trips.deadline(), None);
    }

    #[test]
    fn a_retransmission_is_not_sent_twice() {
        let mut trips = window();
        let t0 = Instant::now();
        let (seq, _) = send(&mut trips, t0);
        assert!(!trips.written(seq, t0 + ms(1)), "written before");
        assert!(!trips.written(99, t0), "never queued");
    }

    /// A path's receiver may read a message before the publisher's task has
    /// handled its write: a success now (from the queueing), sent once its
    /// write is seen, and its seq is still the one that write belongs to.
    #[test]
    fn a_message_back_before_its_write_is_seen_is_still_sent_once() {
        let mut trips = window();
        let t0 = Instant::now();
        let (first, payload) = trips.queue(t0, SystemTime::now()).unwrap();
        let (second, _) = trips.queue(t0 + ms(1), SystemTime::now()).unwrap();
        assert_eq!(
            trips.arrived(payload.as_bytes(), t0 + ms(3)),
            Some((first, RoundTripOutcome::Received(ms(3))))
        );
        assert_eq!(trips.unwritten().collect::<Vec<_>>(), [first, second]);
        assert!(
            trips.written(first, t0 + ms(2)),
            "sent when its write is seen"
        );
        assert!(!trips.written(first, t0 + ms(2)), "and only once");
        assert_eq!(trips.unwritten().collect::<Vec<_>>(), [second]);
        assert_eq!(
            trips.arrived(payload.as_bytes(), t0 + ms(4)),
            Some((first, RoundTripOutcome::Duplicate))
        );
    }

    #[test]
    fn a_message_not_back_within_the_timeout_is_lost_once_and_then_late() {
        let mut trips = window();
        let t0 = Instant::now();
        let (_, payload) = send(&mut trips, t0);
        assert_eq!(trips.deadline(), Some(t0 + ms(1000)));
        assert_eq!(lost_at(&mut trips, t0 + ms(999)), Vec::<u64>::new());
        assert_eq!(lost_at(&mut trips, t0 + ms(1000)), [1]);
        assert_eq!(lost_at(&mut trips, t0 + ms(5000)), Vec::<u64>::new());
        assert_eq!(
            trips.arrived(payload.as_bytes(), t0 + ms(1500)),
            Some((1, RoundTripOutcome::Late))
        );
        assert_eq!(
            trips.arrived(payload.as_bytes(), t0 + ms(1600)),
            Some((1, RoundTripOutcome::Duplicate)),
            "a second copy of a late message is a duplicate"
        );
    }

    #[test]
    fn a_second_copy_is_a_duplicate_never_a_second_success() {
        let mut trips = window();
        let t0 = Instant::now();
        let (_, payload) = send(&mut trips, t0);
        assert!(matches!(
            trips.arrived(payload.as_bytes(), t0 + ms(1)),
            Some((1, RoundTripOutcome::Received(_)))
        ));
        assert_eq!(
            trips.arrived(payload.as_bytes(), t0 + ms(2)),
            Some((1, RoundTripOutcome::Duplicate))
        );
    }

    #[test]
    fn a_message_back_after_a_later_one_is_out_of_order() {
        let mut trips = window();
        let t0 = Instant::now();
        let (_, first) = send(&mut trips, t0);
        let (_, second) = send(&mut trips, t0 + ms(10));
        assert_eq!(
            trips.arrived(second.as_bytes(), t0 + ms(11)),
            Some((2, RoundTripOutcome::Received(ms(1))))
        );
        assert_eq!(
            trips.arrived(first.as_bytes(), t0 + ms(12)),
            Some((1, RoundTripOutcome::OutOfOrder(ms(12))))
        );
    }

    #[test]
    fn messages_of_another_run_or_never_sent_or_not_probes_are_not_ours() {
        let mut trips = window();
        let t0 = Instant::now();
        let (_, payload) = send(&mut trips, t0);
        let mut other = RoundTrips::with_run(RUN + 1, ms(1000));
        let (_, foreign) = send(&mut other, t0);
        assert_eq!(trips.arrived(foreign.as_bytes(), t0), None);
        let unsent = payload.replacen(" 1 ", " 2 ", 1);
        assert_eq!(trips.arrived(unsent.as_bytes(), t0), None);
        for junk in [
            &b""[..],
            b"hello",
            b"mqtt-pulse/1 00c0ffee00000001 1",
            b"mqtt-pulse/1 00c0ffee00000001 1 5 extra",
            b"mqtt-pulse/2 00c0ffee00000001 1 5",
            b"\xff\xfe",
        ] {
            assert_eq!(trips.arrived(junk, t0), None, "{junk:?}");
        }
        assert_eq!(trips.out(), 1, "nothing settled message 1");
    }

    #[test]
    fn a_message_never_written_is_neither_sent_nor_lost() {
        let mut trips = window();
        let t0 = Instant::now();
        trips.queue(t0, SystemTime::now()).unwrap();
        trips.discard_unwritten();
        assert_eq!(trips.deadline(), None);
        assert_eq!(lost_at(&mut trips, t0 + ms(5000)), Vec::<u64>::new());

        trips.queue(t0, SystemTime::now()).unwrap();
        assert_eq!(
            lost_at(&mut trips, t0 + ms(1000)),
            Vec::<u64>::new(),
            "queued for a whole timeout: given up, not lost"
        );
        assert!(
            trips.written(2, t0 + ms(1500)),
            "written after all (a resumed session): sent from now"
        );
        assert_eq!(trips.deadline(), Some(t0 + ms(2500)));
    }

    #[test]
    fn the_window_stays_bounded_and_very_old_arrivals_are_late() {
        let mut trips = window();
        let t0 = Instant::now();
        let (_, first) = send(&mut trips, t0);
        trips.arrived(first.as_bytes(), t0 + ms(1)).unwrap();
        for i in 1..1000 {
            let (_, payload) = send(&mut trips, t0 + ms(i));
            trips.arrived(payload.as_bytes(), t0 + ms(i)).unwrap();
        }
        assert!(trips.window.len() <= HISTORY);
        assert_eq!(
            trips.arrived(first.as_bytes(), t0 + ms(2000)),
            Some((1, RoundTripOutcome::Late)),
            "forgotten: not a duplicate we can prove, never a success"
        );
    }

    #[test]
    fn at_most_max_out_messages_are_out() {
        let mut trips = window();
        let t0 = Instant::now();
        for _ in 0..MAX_OUT {
            send(&mut trips, t0);
        }
        assert_eq!(trips.queue(t0, SystemTime::now()), None);
        assert_eq!(lost_at(&mut trips, t0 + ms(1000)).len(), MAX_OUT);
        assert!(trips.queue(t0 + ms(1000), SystemTime::now()).is_some());
    }

    #[test]
    fn the_payload_carries_the_run_the_sequence_number_and_the_queueing_time() {
        let wall = UNIX_EPOCH + Duration::from_micros(1_764_601_200_123_456);
        let payload = encode(RUN, 42, wall);
        assert_eq!(payload, "mqtt-pulse/1 00c0ffee00000001 42 1764601200123456");
        assert_eq!(decode(payload.as_bytes()), Some((RUN, 42)));
        let zero = encode(0, u64::MAX, UNIX_EPOCH);
        assert_eq!(
            zero,
            format!("mqtt-pulse/1 0000000000000000 {} 0", u64::MAX)
        );
        assert_eq!(decode(zero.as_bytes()), Some((0, u64::MAX)));
    }

    #[test]
    fn decoding_takes_what_the_integer_parsers_took_and_nothing_else() {
        let ok = |text: &str| decode(text.as_bytes());
        assert_eq!(ok("mqtt-pulse/1 00C0FFEE00000001 +7 +1"), Some((RUN, 7)));
        assert_eq!(ok("mqtt-pulse/1 +0c0ffee00000001 7 1"), Some((RUN, 7)));
        for bad in [
            "",
            "mqtt-pulse/1",
            "mqtt-pulse/1 ",
            "mqtt-pulse/2 00c0ffee00000001 7 1",
            "mqtt-pulse/1 00c0ffee0000001 7 1",
            "mqtt-pulse/1 00c0ffee000000001 7 1",
            "mqtt-pulse/1 00c0ffee0000000g 7 1",
            "mqtt-pulse/1 00c0ffee00000001 7",
            "mqtt-pulse/1 00c0ffee00000001 7 1 x",
            "mqtt-pulse/1 00c0ffee00000001 7 1 ",
            "mqtt-pulse/1 00c0ffee00000001  7 1",
            "mqtt-pulse/1 00c0ffee00000001 -7 1",
            "mqtt-pulse/1 00c0ffee00000001 + 1",
            "mqtt-pulse/1 00c0ffee00000001 18446744073709551616 1",
            "mqtt-pulse/1 00c0ffee00000001 7 340282366920938463463374607431768211456",
            "mqtt-pulse/1  00c0ffee00000001 7 1",
        ] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
        assert_eq!(
            ok("mqtt-pulse/1 00c0ffee00000001 7 340282366920938463463374607431768211455"),
            Some((RUN, 7))
        );
        // Beyond a u64 of microseconds (further than a SystemTime reaches).
        let mut text = String::new();
        for n in [
            0,
            9,
            10,
            u128::from(u64::MAX),
            u128::from(u64::MAX) + 1,
            u128::MAX,
        ] {
            text.clear();
            push_decimal(&mut text, n);
            assert_eq!(text, n.to_string());
        }
        let payload = format!(
            "mqtt-pulse/1 00c0ffee00000001 7 {}",
            u128::from(u64::MAX) + 1
        );
        assert_eq!(decode(payload.as_bytes()), Some((RUN, 7)));
    }
}
