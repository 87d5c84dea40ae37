//! The lines `ping` and `watch` print: one per event of one connection,
//! prefixed with who it is about (the broker for `ping`, the client id for
//! `watch`), and the round-trip statistics of their summaries.
//!
//! It owns the wording, so the two subcommands cannot drift apart and a
//! script that reads one reads the other. It must never decide *when* a line
//! is printed (that is each subcommand's bookkeeping) nor write anywhere but
//! standard output.

use std::fmt;
use std::io::Write as _;
use std::time::Duration;

/// What happened to one connection, as one line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Line<'a> {
    /// The connection is up.
    Up,
    /// Keep-alive round trip number `seq` (from 1) took `rtt`.
    RoundTrip { seq: u64, rtt: Duration },
    /// The connection was lost, for this reason if known.
    Down(Option<&'a str>),
    /// A connect attempt failed, for this reason.
    CannotConnect(&'a str),
    /// A PINGREQ went unanswered.
    PingLost(&'a str),
    /// Any other status (`terminating`, `terminated`: a target removed or a
    /// daemon shutting down), by name.
    Status(&'a str),
}

impl Line<'_> {
    /// The line about `who`, without its line ending.
    pub(super) fn about(&self, who: &str) -> String {
        format!("{who}: {self}")
    }
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Line::Up => f.write_str("up"),
            Line::RoundTrip { seq, rtt } => write!(f, "seq={seq} rtt={}", format_ms(*rtt)),
            Line::Down(Some(reason)) => write!(f, "down ({reason})"),
            Line::Down(None) => f.write_str("down"),
            Line::CannotConnect(reason) => write!(f, "cannot connect ({reason})"),
            Line::PingLost(reason) => write!(f, "ping lost ({reason})"),
            Line::Status(status) => f.write_str(status),
        }
    }
}

/// One line on standard output. A closed pipe (`| head -1`) is no reason to
/// panic: the line is dropped.
pub(super) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Round trips seen so far, kept as running sums (Welford's) so a `watch`
/// left open for days over many clients holds a few numbers per client, not
/// every round trip.
#[derive(Debug, Default, Clone)]
pub(super) struct Rtts {
    count: u64,
    mean: f64,
    /// Sum of squared deviations from the mean.
    m2: f64,
    min: f64,
    max: f64,
}

impl Rtts {
    pub(super) fn push(&mut self, rtt: Duration) {
        let seconds = rtt.as_secs_f64();
        self.count += 1;
        if self.count == 1 {
            (self.min, self.max) = (seconds, seconds);
        } else {
            self.min = self.min.min(seconds);
            self.max = self.max.max(seconds);
        }
        let delta = seconds - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (seconds - self.mean);
    }

    /// How many round trips were pushed.
    pub(super) fn count(&self) -> u64 {
        self.count
    }

    /// Their statistics; `None` before the first.
    pub(super) fn stats(&self) -> Option<RttStats> {
        (self.count > 0).then(|| RttStats {
            min: self.min,
            avg: self.mean,
            max: self.max,
            stddev: (self.m2 / self.count as f64).sqrt(),
        })
    }
}

/// Round-trip statistics in seconds; the standard deviation is the
/// population's, as ping's `mdev`.
#[derive(Debug, PartialEq)]
pub(super) struct RttStats {
    pub(super) min: f64,
    pub(super) avg: f64,
    pub(super) max: f64,
    pub(super) stddev: f64,
}

impl fmt::Display for RttStats {
    /// `rtt min/avg/max/stddev = 0.156/0.170/0.185/0.012 ms`, as ping's last line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rtt min/avg/max/stddev = {:.3}/{:.3}/{:.3}/{:.3} ms",
            self.min * 1e3,
            self.avg * 1e3,
            self.max * 1e3,
            self.stddev * 1e3
        )
    }
}

fn format_ms(rtt: Duration) -> String {
    format!("{:.3} ms", rtt.as_secs_f64() * 1e3)
}

/// What `ping` and `watch` show of a URL given on the command line: as given,
/// but a password in it (`mqtt://user:secret@host`) masked, also when the
/// rest of the URL does not parse.
pub(super) fn shown_url(raw: &str) -> String {
    const MASK: &str = "xxxxx";
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some(MASK));
            url.to_string()
        }
        Ok(_) => raw.to_owned(),
        // Unparsable: hide all of the user info, whatever it holds.
        Err(_) => {
            let Some((scheme, rest)) = raw.split_once("://") else {
                return raw.to_owned();
            };
            let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
            match authority.rfind('@') {
                Some(at) => format!("{scheme}://{MASK}@{}", &rest[at + 1..]),
                None => raw.to_owned(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_is_who_then_what() {
        let rtt = Duration::from_micros(153);
        let table = [
            (Line::Up, "b:1: up"),
            (Line::RoundTrip { seq: 2, rtt }, "b:1: seq=2 rtt=0.153 ms"),
            (Line::Down(Some("ping_timeout")), "b:1: down (ping_timeout)"),
            (Line::Down(None), "b:1: down"),
            (
                Line::CannotConnect("connection_refused"),
                "b:1: cannot connect (connection_refused)",
            ),
            (
                Line::PingLost("ping_timeout"),
                "b:1: ping lost (ping_timeout)",
            ),
            (Line::Status("terminated"), "b:1: terminated"),
        ];
        for (line, expected) in table {
            assert_eq!(line.about("b:1"), expected);
        }
    }

    #[test]
    fn rtt_statistics_are_min_avg_max_and_the_population_stddev() {
        let ms = Duration::from_millis;
        let mut rtts = Rtts::default();
        assert_eq!(rtts.stats(), None);
        for rtt in [ms(3), ms(1), ms(6), ms(2)] {
            rtts.push(rtt);
        }
        assert_eq!(rtts.count(), 4);
        let stats = rtts.stats().unwrap();
        assert!((stats.min - 0.001).abs() < 1e-12);
        assert!((stats.avg - 0.003).abs() < 1e-12);
        assert!((stats.max - 0.006).abs() < 1e-12);
        // deviations -2, -1, 0, 3 ms: variance 14/4 ms²
        assert!(
            (stats.stddev - (3.5f64).sqrt() * 1e-3).abs() < 1e-12,
            "{stats:?}"
        );
        assert_eq!(
            stats.to_string(),
            "rtt min/avg/max/stddev = 1.000/3.000/6.000/1.871 ms"
        );
    }

    #[test]
    fn a_password_never_shows_and_the_rest_does() {
        assert_eq!(
            shown_url("mqtt://u:s3cret@127.0.0.1:1883"),
            "mqtt://u:xxxxx@127.0.0.1:1883"
        );
        assert_eq!(shown_url("mqtt://127.0.0.1:1883"), "mqtt://127.0.0.1:1883");
        assert_eq!(shown_url("mqtt://u@host:1883"), "mqtt://u@host:1883");
        // A port that does not parse: the user info goes whole.
        let shown = shown_url("mqtt://u:s3cret@host:99999/x");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(shown, "mqtt://xxxxx@host:99999/x");
    }
}
