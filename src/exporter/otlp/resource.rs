//! The OTLP resource: our `service.*` attributes, layered under
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME` and those given to the
//! builder, and the random `service.instance.id`. Sans-IO, like `settings`.

use super::settings::{Lookup, RESOURCE_ATTRIBUTES, SERVICE_NAME};

/// The resource attributes, later ones winning: ours, then
/// `OTEL_RESOURCE_ATTRIBUTES`, then `OTEL_SERVICE_NAME`, then the ones given in
/// code. One entry per key, in first-seen order.
pub(super) fn attributes(
    explicit: &[(String, String)],
    env: Lookup<'_>,
    instance_id: &str,
) -> Vec<(String, String)> {
    let mut attributes: Vec<(String, String)> = vec![
        ("service.name".into(), env!("CARGO_PKG_NAME").into()),
        ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
        ("service.instance.id".into(), instance_id.into()),
    ];
    let mut set = |key: &str, value: String| match attributes.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => attributes.push((key.to_owned(), value)),
    };
    if let Some(list) = env(RESOURCE_ATTRIBUTES) {
        for pair in list.split(',') {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() {
                continue;
            }
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_or_else(|_| value.to_owned(), |decoded| decoded.into_owned());
            set(key, value);
        }
    }
    if let Some(name) = env(SERVICE_NAME) {
        set("service.name", name.trim().to_owned());
    }
    for (key, value) in explicit {
        set(key, value.clone());
    }
    attributes
}

/// A random (version 4) UUID for `service.instance.id`: a fresh id per
/// process, as the semantic conventions recommend when nothing stable names
/// the instance. Random enough to be unique, not for secrecy.
pub(super) fn random_instance_id() -> String {
    let bits = fastrand::u128(..);
    // Version 4 in the high nibble of byte 6, RFC 4122 variant in byte 8.
    let bits = (bits & !(0xF << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporter::otlp::settings::tests::env_of;

    #[test]
    fn resource_attributes_layer_ours_then_the_environment_then_code() {
        let env = [
            (
                RESOURCE_ATTRIBUTES,
                "deployment.environment=prod, service.instance.id=pod%2D7,=x,junk",
            ),
            (SERVICE_NAME, "probe-north"),
        ];
        let explicit = [("deployment.environment".into(), "staging".into())];
        let resource = attributes(&explicit, &env_of(&env), "instance");
        let get = |key: &str| {
            resource
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("service.name"), Some("probe-north"));
        assert_eq!(get("service.version"), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(get("service.instance.id"), Some("pod-7"));
        assert_eq!(get("deployment.environment"), Some("staging"));
        assert_eq!(resource.len(), 4);
    }

    #[test]
    fn our_service_name_and_instance_id_are_the_defaults() {
        assert_eq!(
            attributes(&[], &env_of(&[]), "abc"),
            [
                ("service.name".to_owned(), "mqtt-pulse".to_owned()),
                (
                    "service.version".to_owned(),
                    env!("CARGO_PKG_VERSION").to_owned()
                ),
                ("service.instance.id".to_owned(), "abc".to_owned()),
            ]
        );
    }

    #[test]
    fn instance_ids_are_distinct_version_4_uuids() {
        let a = random_instance_id();
        let b = random_instance_id();
        assert_ne!(a, b);
        for id in [a, b] {
            let groups: Vec<&str> = id.split('-').collect();
            assert_eq!(
                groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12],
                "{id}"
            );
            assert!(groups[2].starts_with('4'), "{id}");
            assert!(matches!(&groups[3][..1], "8" | "9" | "a" | "b"), "{id}");
            assert!(
                id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
                "{id}"
            );
        }
    }
}
