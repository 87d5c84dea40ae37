//! The keys each table of the file knows, and the did-you-mean suggestion of
//! an unknown key: a close key of the same table, or `table.key` when the key
//! belongs one table down.

/// Keys of the top level.
pub(super) const TOP_KEYS: &[&str] = &["defaults", "target", "path", "otlp"];
/// Keys of a `[[path]]`.
pub(super) const PATH_KEYS: &[&str] =
    &["name", "from", "to", "topic", "interval", "qos", "timeout"];
/// Keys a `[[target]]` has and `[defaults]` has not.
pub(super) const TARGET_ONLY_KEYS: &[&str] = &[
    "name",
    "url",
    "client_id",
    "username",
    "password",
    "password_file",
];
/// Keys of both `[defaults]` and `[[target]]`.
pub(super) const LAYER_KEYS: &[&str] = &[
    "keep_alive",
    "connect_timeout",
    "ping_timeout",
    "backoff",
    "clean_session",
    "protocol",
    "labels",
    "tls",
    "probe",
];
/// Keys `[defaults]` has and `[[target]]` has not: settings of every target
/// of a broker together.
pub(super) const DEFAULTS_ONLY_KEYS: &[&str] =
    &["connect_concurrency", "rtt_buckets", "rtt_native_schema"];
/// Keys of `[[target]]` that `[defaults]` has as a template: `client_id`,
/// expanded for each target that sets none.
pub(super) const DEFAULTS_TEMPLATE_KEYS: &[&str] = &["client_id"];
/// Keys of a `backoff` table.
pub(super) const BACKOFF_KEYS: &[&str] = &["initial", "max"];
/// Keys of a `tls` table.
pub(super) const TLS_KEYS: &[&str] = &["ca_file", "cert_file", "key_file", "insecure_skip_verify"];
/// Keys of a `probe` table.
pub(super) const PROBE_KEYS: &[&str] = &["enabled", "topic", "interval", "qos", "timeout"];
/// Keys of sub-tables, suggested as dotted keys when written one level up.
pub(super) const NESTED_KEYS: &[(&str, &[&str])] = &[
    ("tls", TLS_KEYS),
    ("backoff", BACKOFF_KEYS),
    ("probe", PROBE_KEYS),
];
/// Keys of `[otlp]`.
pub(super) const OTLP_KEYS: &[&str] = &["endpoint", "protocol", "interval", "timeout", "headers"];

/// The key among `known` (or `table.key` among `nested`) that `key` most
/// likely meant.
pub(super) fn suggest(key: &str, known: &[&str], nested: &[(&str, &[&str])]) -> Option<String> {
    let normalized = key.to_ascii_lowercase().replace('-', "_");
    if let Some(exact) = known.iter().find(|candidate| **candidate == normalized) {
        return Some((*exact).to_owned());
    }
    for (table, keys) in nested {
        if keys.contains(&normalized.as_str()) {
            return Some(format!("{table}.{normalized}"));
        }
    }
    known
        .iter()
        .map(|candidate| (strsim::jaro_winkler(&normalized, candidate), *candidate))
        .filter(|(similarity, _)| *similarity >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_a_close_key_or_the_dotted_key_of_a_sub_table() {
        let known = [TARGET_ONLY_KEYS, LAYER_KEYS].concat();
        for (written, meant) in [
            ("keep_alvie", "keep_alive"),
            ("Keep-Alive", "keep_alive"),
            ("pasword_file", "password_file"),
            ("ca_file", "tls.ca_file"),
            ("initial", "backoff.initial"),
        ] {
            let suggestion = suggest(written, &known, NESTED_KEYS);
            assert_eq!(suggestion.as_deref(), Some(meant), "{written}");
        }
    }

    #[test]
    fn suggests_nothing_for_an_unrelated_key() {
        assert_eq!(suggest("colour", LAYER_KEYS, NESTED_KEYS), None);
    }
}
