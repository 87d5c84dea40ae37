//! The rules for a client's extra constant labels (say `site="north"`): which
//! names may be used and how long names and values may be.
//!
//! They live with the connection, which carries the labels, so that the layers
//! above — the exporters that put them on every series, the config file that
//! reads them — check them by the same rules without reaching sideways.

/// The labels every per-client series already has, which a client's extra
/// constant labels may not reuse.
pub(crate) const OWN_LABELS: &[&str] =
    &["client_id", "broker", "status", "reason", "type", "outcome"];

/// The longest name of an extra constant label, in bytes.
pub const MAX_LABEL_NAME_LENGTH: usize = 128;

/// The longest value of an extra constant label, in bytes — and, in the
/// config file, of a client id, which is the `client_id` label of every series
/// of its client. Far beyond any sensible label; short of a page where every
/// sample of a client carries kilobytes of labels.
pub const MAX_LABEL_VALUE_LENGTH: usize = 1024;

/// Why `name` cannot be an extra constant label, if it cannot.
pub(crate) fn label_name_problem(name: &str) -> Option<&'static str> {
    if name.len() > MAX_LABEL_NAME_LENGTH {
        return Some("label names are at most 128 bytes long");
    }
    let mut chars = name.chars();
    let well_formed = chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !well_formed {
        Some("label names match [a-zA-Z_][a-zA-Z0-9_]*")
    } else if name.starts_with("__") {
        Some("names starting with __ are reserved for Prometheus")
    } else if OWN_LABELS.contains(&name) {
        Some(
            "mqtt-pulse sets this label itself (client_id, broker, status, reason, type and outcome are taken)",
        )
    } else {
        None
    }
}

/// Why `value` cannot be the value of a label, if it cannot.
pub(crate) fn label_value_problem(value: &str) -> Option<&'static str> {
    (value.len() > MAX_LABEL_VALUE_LENGTH).then_some("label values are at most 1024 bytes long")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_follow_prometheus_and_avoid_ours() {
        for good in ["site", "_x", "Site_2", &"n".repeat(MAX_LABEL_NAME_LENGTH)] {
            assert_eq!(label_name_problem(good), None, "{good}");
        }
        let too_long = "n".repeat(MAX_LABEL_NAME_LENGTH + 1);
        for bad in [
            "",
            "2site",
            "si-te",
            "sité",
            "__meta",
            "client_id",
            "type",
            &too_long,
        ] {
            assert!(label_name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn label_values_are_bounded_in_bytes() {
        assert_eq!(
            label_value_problem(&"v".repeat(MAX_LABEL_VALUE_LENGTH)),
            None
        );
        assert!(label_value_problem(&"v".repeat(MAX_LABEL_VALUE_LENGTH + 1)).is_some());
    }
}
