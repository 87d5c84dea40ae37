//! The web config's `rate_limit`: a token bucket, and the Go duration syntax
//! its `interval` is written in.
//!
//! It owns the bucket and its arithmetic; the middleware that answers `429`
//! is in the parent module. It must never make a request wait for a token.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket: `burst` requests at once, then one per `interval`, as
/// golang.org/x/time/rate (and so the exporter-toolkit's `rate_limit`) does.
pub(crate) struct RateLimiter {
    interval: Duration,
    burst: u32,
    bucket: Mutex<(f64, Instant)>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("interval", &self.interval)
            .field("burst", &self.burst)
            .finish()
    }
}

impl RateLimiter {
    /// `interval` > 0, `burst` ≥ 1; the bucket starts full.
    pub(crate) fn new(interval: Duration, burst: u32) -> Self {
        RateLimiter {
            interval,
            burst,
            bucket: Mutex::new((f64::from(burst), Instant::now())),
        }
    }

    /// Takes a token if there is one.
    pub(crate) fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = *bucket;
        let earned =
            now.saturating_duration_since(last).as_secs_f64() / self.interval.as_secs_f64();
        let tokens = (tokens + earned).min(f64::from(self.burst));
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            true
        } else {
            *bucket = (tokens, now);
            false
        }
    }
}

/// A duration as Go's `time.ParseDuration` reads it (what the exporter-toolkit
/// uses for `rate_limit.interval`): `0`, or numbers with units `ns`, `us`
/// (`µs`), `ms`, `s`, `m`, `h`, e.g. `1.5s`, `1m30s`. Negative durations are
/// `None`.
///
/// By hand because no crate in reach reads Go's syntax: humantime (which the
/// TOML config uses) has no fractions (`1.5s`) and spells units differently,
/// and a file written for the exporter-toolkit must mean the same here.
pub(crate) fn parse_go_duration(text: &str) -> Option<Duration> {
    let text = text.strip_prefix('+').unwrap_or(text);
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3_600.0,
            _ => return None,
        };
        total += value * seconds;
        rest = next;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_one_per_interval() {
        let limiter = RateLimiter::new(Duration::from_secs(1), 3);
        let start = Instant::now();
        assert!((0..3).all(|_| limiter.allow_at(start)));
        assert!(!limiter.allow_at(start));
        assert!(!limiter.allow_at(start + Duration::from_millis(900)));
        assert!(limiter.allow_at(start + Duration::from_millis(1_000)));
        assert!(!limiter.allow_at(start + Duration::from_millis(1_000)));
        // Never more than the burst, however long it was quiet.
        let later = start + Duration::from_secs(3_600);
        assert!((0..3).all(|_| limiter.allow_at(later)));
        assert!(!limiter.allow_at(later));
    }

    #[test]
    fn go_durations_read_like_time_parse_duration() {
        let ms = Duration::from_millis;
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("1s"), Some(ms(1_000)));
        assert_eq!(parse_go_duration("500ms"), Some(ms(500)));
        assert_eq!(parse_go_duration("1.5s"), Some(ms(1_500)));
        assert_eq!(parse_go_duration("1m30s"), Some(ms(90_000)));
        assert_eq!(parse_go_duration("2h"), Some(ms(7_200_000)));
        assert_eq!(parse_go_duration("+1s"), Some(ms(1_000)));
        for bad in ["", "1", "s", "-1s", "1d", "1.2.3s", "1 s", "one second"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }
}
