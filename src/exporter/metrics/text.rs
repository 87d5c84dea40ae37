//! Low-level writing of the Prometheus text exposition format (version 0.0.4)
//! into a `String`: family headers, label pairs with the format's escaping, and
//! sample values. It owns those rules and nothing else; it must never allocate
//! per sample, because a scrape of ten thousand clients writes about a quarter
//! of a million samples.
//!
//! Finite numbers are written exactly as the `prometheus` crate's `TextEncoder`
//! writes them (Rust's shortest round-trip `Display`), so our fast path and a
//! plain `gather()` + `TextEncoder` produce the same bytes; infinities are
//! spelled `+Inf`/`-Inf` as the format wants (the encoder writes `inf`), but
//! the exporter's own values are always finite.

use std::fmt::Write as _;

/// Writes the `# HELP` and `# TYPE` lines of a family.
pub(super) fn push_header(out: &mut String, name: &str, help: &str, metric_type: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    push_escaped(out, help, false);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(metric_type);
    out.push('\n');
}

/// Appends `name="value"` with `value` escaped as a label value.
pub(super) fn push_label_pair(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    push_escaped(out, value, true);
    out.push('"');
}

/// Writes a sample's name and labels up to the value: `name{labels,extra} `.
/// `labels` and `extra` are already-rendered label pairs (either may be empty).
pub(super) fn push_series(out: &mut String, name: &str, suffix: &str, labels: &str, extra: &str) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || !extra.is_empty() {
        out.push('{');
        out.push_str(labels);
        if !labels.is_empty() && !extra.is_empty() {
            out.push(',');
        }
        out.push_str(extra);
        out.push('}');
    }
    out.push(' ');
}

/// Writes an integer sample value and ends the line.
pub(super) fn push_u64_line(out: &mut String, value: u64) {
    push_u64(out, value);
    out.push('\n');
}

/// Writes a floating-point sample value and ends the line.
pub(super) fn push_f64_line(out: &mut String, value: f64) {
    push_f64(out, value);
    out.push('\n');
}

/// The text of an `le` bound as the `TextEncoder` writes it (`0.005`, `1`).
pub(super) fn bound_text(bound: f64) -> String {
    let mut text = String::new();
    push_f64(&mut text, bound);
    text
}

fn push_u64(out: &mut String, mut value: u64) {
    // Hand-rolled because `write!` goes through the formatting machinery, which
    // costs several times more than this loop at a quarter-million samples.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[start..]).expect("ASCII digits"));
}

fn push_f64(out: &mut String, value: f64) {
    // Below 2^53 every integer is exact, and `Display` prints it without a
    // fraction, just as the integer path does.
    const EXACT_INTEGERS: f64 = 9_007_199_254_740_992.0;
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else if value.fract() == 0.0 && value.abs() < EXACT_INTEGERS && value != 0.0 {
        if value < 0.0 {
            out.push('-');
        }
        push_u64(out, value.abs() as u64);
    } else {
        write!(out, "{value}").expect("writing to a String cannot fail");
    }
}

/// Escapes `\` and line feeds, and `"` too inside label values, as the format
/// requires; everything else (any UTF-8) passes through.
fn push_escaped(out: &mut String, text: &str, in_label_value: bool) {
    let needs_escape = |b: u8| b == b'\\' || b == b'\n' || (in_label_value && b == b'"');
    if !text.bytes().any(needs_escape) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if in_label_value => out.push_str("\\\""),
            other => out.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f64_text(value: f64) -> String {
        let mut out = String::new();
        push_f64(&mut out, value);
        out
    }

    #[test]
    fn label_values_escape_backslash_quote_and_line_feed() {
        let mut out = String::new();
        push_label_pair(&mut out, "client_id", "a\\b\"c\nd<é>");
        assert_eq!(out, r#"client_id="a\\b\"c\nd<é>""#);
    }

    #[test]
    fn help_text_keeps_quotes_but_escapes_line_feeds() {
        let mut out = String::new();
        push_header(&mut out, "x_total", "a \"b\"\nc\\", "counter");
        assert_eq!(
            out,
            "# HELP x_total a \"b\"\\nc\\\\\n# TYPE x_total counter\n"
        );
    }

    #[test]
    fn integers_are_written_like_display() {
        for value in [0u64, 1, 9, 10, 99, 12_345, u64::MAX] {
            let mut out = String::new();
            push_u64_line(&mut out, value);
            assert_eq!(out, format!("{value}\n"));
        }
    }

    #[test]
    fn floats_are_written_like_display_and_special_values_as_prometheus_spells_them() {
        for value in [
            0.0,
            1.0,
            3.0,
            0.00025,
            0.005,
            2.5,
            1_764_119_234.123_456,
            1e300,
            2.0f64.powi(53),
        ] {
            assert_eq!(f64_text(value), value.to_string(), "{value}");
        }
        assert_eq!(f64_text(-3.0), "-3");
        assert_eq!(f64_text(f64::NAN), "NaN");
        assert_eq!(f64_text(f64::INFINITY), "+Inf");
        assert_eq!(f64_text(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn series_join_labels_and_the_extra_pair() {
        let mut out = String::new();
        push_series(&mut out, "h", "_bucket", r#"a="1""#, r#"le="0.5""#);
        push_series(&mut out, "h", "_sum", r#"a="1""#, "");
        push_series(&mut out, "g", "", "", r#"type="x""#);
        push_series(&mut out, "g", "", "", "");
        assert_eq!(
            out,
            "h_bucket{a=\"1\",le=\"0.5\"} h_sum{a=\"1\"} g{type=\"x\"} g "
        );
    }
}
