//! Where the OTLP exporter pushes, how often, with which headers and resource:
//! the settings given to the builder merged with the standard `OTEL_*`
//! environment variables (OpenTelemetry's convention, so they are read here).
//!
//! Sans-IO: the environment comes in as a lookup function, so every rule is
//! tested without touching the process environment. It never connects to
//! anything and never puts a header value into an error.
//!
//! # Precedence
//!
//! A setting given to the builder wins; otherwise the environment
//! variable; otherwise the default:
//!
//! | setting | environment (first set wins) | default |
//! |---|---|---|
//! | protocol | `OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL` | `grpc` |
//! | endpoint | `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (used as is), `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL) | `http://localhost:4317`, or `http://localhost:4318/v1/metrics` |
//! | interval | `OTEL_METRIC_EXPORT_INTERVAL` (ms) | 60 s |
//! | timeout | `OTEL_EXPORTER_OTLP_METRICS_TIMEOUT`, `OTEL_EXPORTER_OTLP_TIMEOUT` (ms) | 10 s |
//! | resource | `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME` | `service.name=mqtt-pulse`, … |
//!
//! Headers are the exception: the OpenTelemetry SDK itself adds
//! `OTEL_EXPORTER_OTLP_(METRICS_)HEADERS` on top of the headers given here,
//! and for a name given in both it sends the environment's value. The builder
//! cannot prevent that; it logs a warning naming the header (never its value).

use std::collections::BTreeMap;
use std::time::Duration;

use url::Url;

use super::{OtlpError, OtlpProtocol, resource};

/// Reads one environment variable; `None` when unset or blank.
pub(super) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(super) const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub(super) const METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
pub(super) const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub(super) const METRICS_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL";
pub(super) const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
pub(super) const METRICS_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT";
pub(super) const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
pub(super) const METRICS_HEADERS: &str = "OTEL_EXPORTER_OTLP_METRICS_HEADERS";
pub(super) const INTERVAL: &str = "OTEL_METRIC_EXPORT_INTERVAL";
pub(super) const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
pub(super) const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
pub(super) const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
/// Every variable whose presence turns OTLP export on in the daemon starts so.
pub(super) const EXPORTER_PREFIX: &str = "OTEL_EXPORTER_OTLP_";

/// The OpenTelemetry default push interval.
pub(super) const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// The OpenTelemetry default time one push may take.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
const DEFAULT_HTTP_ENDPOINT: &str = "http://localhost:4318/v1/metrics";
const METRICS_PATH: &str = "/v1/metrics";

/// The process environment as a [`Lookup`].
pub(super) fn process_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// Whether the process environment asks for OTLP export: some
/// `OTEL_EXPORTER_OTLP_*` variable is set (non-empty), and
/// `OTEL_SDK_DISABLED` is not `true`. The daemon exports when this holds or
/// the config file has an `[otlp]` table.
pub fn configured_by_env() -> bool {
    enabled_by(
        std::env::vars_os().filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        }),
    )
}

/// Whether these environment variables ask for OTLP export: any non-empty
/// `OTEL_EXPORTER_OTLP_*`, unless `OTEL_SDK_DISABLED=true`.
pub(super) fn enabled_by(vars: impl IntoIterator<Item = (String, String)>) -> bool {
    let mut exporter_set = false;
    for (name, value) in vars {
        if name == SDK_DISABLED && value.trim().eq_ignore_ascii_case("true") {
            return false;
        }
        exporter_set |= name.starts_with(EXPORTER_PREFIX) && !value.trim().is_empty();
    }
    exporter_set
}

/// What the caller asked for; `None` means "the environment or the default".
#[derive(Clone, Default)]
pub(super) struct Requested {
    pub endpoint: Option<String>,
    pub protocol: Option<OtlpProtocol>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub headers: BTreeMap<String, String>,
    pub resource: Vec<(String, String)>,
}

/// Everything the exporter is built with.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Resolved {
    pub protocol: OtlpProtocol,
    /// The URL handed to the SDK: for HTTP the full `/v1/metrics` URL.
    pub endpoint: Url,
    pub interval: Duration,
    pub timeout: Duration,
    /// Validated headers given to the builder.
    pub headers: BTreeMap<String, String>,
    /// Lower-case names of the headers the SDK will add from the environment.
    pub env_header_names: Vec<String>,
    /// Every header value, from code and from the environment: kept only to
    /// scrub them out of error messages.
    pub secrets: Vec<String>,
    /// Resource attributes other than the SDK's `telemetry.sdk.*`.
    pub resource: Vec<(String, String)>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("protocol", &self.protocol)
            .field("endpoint", &redacted(&self.endpoint))
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("env_header_names", &self.env_header_names)
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

/// Merges `requested` with the environment read through `env`.
pub(super) fn resolve(
    requested: &Requested,
    env: Lookup<'_>,
    instance_id: &str,
) -> Result<Resolved, OtlpError> {
    let protocol = match requested.protocol {
        Some(protocol) => protocol,
        None => protocol_from_env(env)?,
    };
    let endpoint = endpoint(requested.endpoint.as_deref(), protocol, env)?;
    let interval = match requested.interval {
        Some(interval) => positive(interval, "interval")?,
        None => millis_from_env(env, &[INTERVAL])?.unwrap_or(DEFAULT_INTERVAL),
    };
    let timeout = match requested.timeout {
        Some(timeout) => positive(timeout, "timeout")?,
        None => millis_from_env(env, &[METRICS_TIMEOUT, TIMEOUT])?.unwrap_or(DEFAULT_TIMEOUT),
    };
    for (name, value) in &requested.headers {
        check_header(name, value)?;
    }
    let env_headers = env_headers(env);
    let mut secrets: Vec<String> = requested.headers.values().cloned().collect();
    secrets.extend(env_headers.iter().map(|(_, value)| value.clone()));
    secrets.retain(|secret| !secret.is_empty());
    Ok(Resolved {
        protocol,
        endpoint,
        interval,
        timeout,
        headers: requested.headers.clone(),
        env_header_names: env_headers.into_iter().map(|(name, _)| name).collect(),
        secrets,
        resource: resource::attributes(&requested.resource, env, instance_id),
    })
}

fn positive(duration: Duration, what: &'static str) -> Result<Duration, OtlpError> {
    if duration.is_zero() {
        Err(OtlpError::ZeroDuration(what))
    } else {
        Ok(duration)
    }
}

fn protocol_from_env(env: Lookup<'_>) -> Result<OtlpProtocol, OtlpError> {
    for variable in [METRICS_PROTOCOL, PROTOCOL] {
        let Some(value) = env(variable) else { continue };
        return OtlpProtocol::from_name(&value.trim().to_ascii_lowercase()).ok_or(
            OtlpError::Protocol {
                origin: variable,
                value,
            },
        );
    }
    Ok(OtlpProtocol::Grpc)
}

/// The URL the SDK gets. An endpoint given to the builder or
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is a base URL: for HTTP, `/v1/metrics` is
/// appended unless the path already ends with it. The signal-specific
/// variable is used exactly as given.
fn endpoint(
    explicit: Option<&str>,
    protocol: OtlpProtocol,
    env: Lookup<'_>,
) -> Result<Url, OtlpError> {
    let (text, origin, is_base) = match explicit.filter(|e| !e.trim().is_empty()) {
        Some(text) => (text.to_owned(), "the endpoint setting", true),
        None => match (env(METRICS_ENDPOINT), env(ENDPOINT)) {
            (Some(text), _) => (text, METRICS_ENDPOINT, false),
            (None, Some(text)) => (text, ENDPOINT, true),
            (None, None) => {
                let default = match protocol {
                    OtlpProtocol::Grpc => DEFAULT_GRPC_ENDPOINT,
                    OtlpProtocol::HttpProtobuf => DEFAULT_HTTP_ENDPOINT,
                };
                (default.to_owned(), "the default", false)
            }
        },
    };
    // The text is not echoed: a URL can carry a token in its user info or query.
    let url = Url::parse(text.trim()).map_err(|error| OtlpError::Endpoint {
        endpoint: format!("from {origin}"),
        reason: format!("not a URL ({error}); expected http://host:port"),
    })?;
    let shown = || format!("{} (from {origin})", redacted(&url));
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(OtlpError::Endpoint {
                endpoint: shown(),
                reason: "this build has no TLS support for OTLP; use an http:// endpoint \
                         (a local collector or a TLS-terminating proxy)"
                    .to_owned(),
            });
        }
        other => {
            return Err(OtlpError::Endpoint {
                endpoint: shown(),
                reason: format!("unsupported scheme {other:?}; expected http://host:port"),
            });
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(OtlpError::Endpoint {
            endpoint: shown(),
            reason: "no host".to_owned(),
        });
    }
    Ok(match (protocol, is_base) {
        (OtlpProtocol::HttpProtobuf, true) => with_metrics_path(url),
        _ => url,
    })
}

fn with_metrics_path(mut url: Url) -> Url {
    if !url.path().ends_with(METRICS_PATH) {
        let path = format!("{}{METRICS_PATH}", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    url
}

/// The endpoint as tonic wants it: without the `/` path [`Url`] adds.
pub(super) fn grpc_target(url: &Url) -> String {
    let text = url.as_str();
    if url.path() == "/" && url.query().is_none() && url.fragment().is_none() {
        text.trim_end_matches('/').to_owned()
    } else {
        text.to_owned()
    }
}

/// `url` without user info, query or fragment: safe for logs and errors.
pub(super) fn redacted(url: &Url) -> String {
    let mut url = url.clone();
    // Only fails for URLs that cannot have user info, which then have none.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

fn millis_from_env(
    env: Lookup<'_>,
    variables: &[&'static str],
) -> Result<Option<Duration>, OtlpError> {
    for &variable in variables {
        let Some(value) = env(variable) else { continue };
        return match value.trim().parse::<u64>() {
            Ok(millis) if millis > 0 => Ok(Some(Duration::from_millis(millis))),
            _ => Err(OtlpError::Environment {
                variable,
                value,
                expected: "a whole number of milliseconds greater than 0",
            }),
        };
    }
    Ok(None)
}

/// A header name and value the SDK will send unchanged. Errors name the
/// header, never the value.
pub(super) fn check_header(name: &str, value: &str) -> Result<(), OtlpError> {
    let reason = if name.is_empty() {
        Some("the name is empty")
    } else if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        Some("the name is not a valid HTTP header name")
    } else if name.to_ascii_lowercase().ends_with("-bin") {
        Some("binary (-bin) gRPC metadata is not supported")
    } else if !value
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        Some("the value holds characters other than visible ASCII, space and tab")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(OtlpError::Header {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The headers the SDK reads from the environment (the signal-specific
/// variable if set, else the general one), lower-case names.
fn env_headers(env: Lookup<'_>) -> Vec<(String, String)> {
    let Some(list) = env(METRICS_HEADERS).or_else(|| env(HEADERS)) else {
        return Vec::new();
    };
    list.split(',')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim();
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_or_else(|_| value.to_owned(), |decoded| decoded.into_owned());
            (!name.is_empty()).then_some((name, value))
        })
        .collect()
}

/// `text` with every secret replaced, for messages that may echo a header.
pub(super) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "<redacted>");
        }
    }
    text
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::HashMap;

    use super::*;

    /// An environment of `pairs`, read as the process environment is.
    pub(in crate::exporter::otlp) fn env_of(
        pairs: &[(&str, &str)],
    ) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned().filter(|v| !v.trim().is_empty())
    }

    fn resolve_with(requested: &Requested, pairs: &[(&str, &str)]) -> Result<Resolved, OtlpError> {
        resolve(requested, &env_of(pairs), "instance")
    }

    /// The protocol, the endpoint as the SDK gets it, the interval and the
    /// timeout (in milliseconds).
    fn summary(resolved: &Resolved) -> (OtlpProtocol, String, u128, u128) {
        let endpoint = match resolved.protocol {
            OtlpProtocol::Grpc => grpc_target(&resolved.endpoint),
            OtlpProtocol::HttpProtobuf => resolved.endpoint.to_string(),
        };
        (
            resolved.protocol,
            endpoint,
            resolved.interval.as_millis(),
            resolved.timeout.as_millis(),
        )
    }

    #[test]
    fn nothing_set_means_grpc_to_localhost_every_minute() {
        let resolved = resolve_with(&Requested::default(), &[]).unwrap();
        assert_eq!(
            summary(&resolved),
            (
                OtlpProtocol::Grpc,
                "http://localhost:4317".into(),
                60_000,
                10_000
            )
        );
    }

    #[test]
    fn what_the_builder_is_given_wins_over_the_environment() {
        let requested = Requested {
            endpoint: Some("http://file:4317".into()),
            protocol: Some(OtlpProtocol::Grpc),
            interval: Some(Duration::from_secs(7)),
            timeout: Some(Duration::from_secs(3)),
            ..Requested::default()
        };
        let env = [
            (METRICS_ENDPOINT, "http://env-metrics:4318/v1/metrics"),
            (ENDPOINT, "http://env:4318"),
            (PROTOCOL, "http/protobuf"),
            (INTERVAL, "1000"),
            (TIMEOUT, "500"),
        ];
        let resolved = resolve_with(&requested, &env).unwrap();
        assert_eq!(
            summary(&resolved),
            (OtlpProtocol::Grpc, "http://file:4317".into(), 7_000, 3_000)
        );
    }

    #[test]
    fn the_environment_fills_what_the_builder_leaves_out() {
        let env = [
            (ENDPOINT, "http://env:4318/"),
            (PROTOCOL, "http/protobuf"),
            (INTERVAL, "1500"),
            (TIMEOUT, "2500"),
        ];
        let resolved = resolve_with(&Requested::default(), &env).unwrap();
        assert_eq!(
            summary(&resolved),
            (
                OtlpProtocol::HttpProtobuf,
                "http://env:4318/v1/metrics".into(),
                1_500,
                2_500
            )
        );
    }

    #[test]
    fn signal_specific_variables_win_over_the_general_ones_and_are_used_as_given() {
        let env = [
            (METRICS_ENDPOINT, "http://metrics:9999/custom"),
            (ENDPOINT, "http://general:4318"),
            (METRICS_PROTOCOL, "http/protobuf"),
            (PROTOCOL, "grpc"),
            (METRICS_TIMEOUT, "100"),
            (TIMEOUT, "200"),
        ];
        let resolved = resolve_with(&Requested::default(), &env).unwrap();
        assert_eq!(
            summary(&resolved),
            (
                OtlpProtocol::HttpProtobuf,
                "http://metrics:9999/custom".into(),
                60_000,
                100
            )
        );
    }

    #[test]
    fn an_http_base_url_gets_the_metrics_path_once() {
        for (given, expected) in [
            ("http://c:4318", "http://c:4318/v1/metrics"),
            ("http://c:4318/", "http://c:4318/v1/metrics"),
            ("http://c:4318/otlp", "http://c:4318/otlp/v1/metrics"),
            ("http://c:4318/otlp/", "http://c:4318/otlp/v1/metrics"),
            ("http://c:4318/v1/metrics", "http://c:4318/v1/metrics"),
        ] {
            let requested = Requested {
                endpoint: Some(given.into()),
                protocol: Some(OtlpProtocol::HttpProtobuf),
                ..Requested::default()
            };
            let resolved = resolve_with(&requested, &[]).unwrap();
            assert_eq!(resolved.endpoint.as_str(), expected, "{given}");
        }
    }

    #[test]
    fn a_grpc_endpoint_keeps_its_path_but_loses_the_bare_slash() {
        let url = Url::parse("http://c:4317").unwrap();
        assert_eq!(grpc_target(&url), "http://c:4317");
        let url = Url::parse("http://c:4317/prefix").unwrap();
        assert_eq!(grpc_target(&url), "http://c:4317/prefix");
    }

    #[test]
    fn unusable_environment_values_name_the_variable() {
        for (pairs, needle) in [
            (
                &[(INTERVAL, "soon")][..],
                "OTEL_METRIC_EXPORT_INTERVAL=\"soon\"",
            ),
            (&[(INTERVAL, "0")][..], "OTEL_METRIC_EXPORT_INTERVAL=\"0\""),
            (
                &[(TIMEOUT, "1.5")][..],
                "OTEL_EXPORTER_OTLP_TIMEOUT=\"1.5\"",
            ),
            (
                &[(PROTOCOL, "http/json")][..],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                &[(ENDPOINT, "collector:4317")][..],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                &[(ENDPOINT, "not a url")][..],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
        ] {
            let error = resolve_with(&Requested::default(), pairs)
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{pairs:?}: {error}");
        }
    }

    #[test]
    fn https_is_refused_with_the_reason_and_without_credentials() {
        let requested = Requested {
            endpoint: Some("https://user:hunter2@collector:4317/?token=hunter2".into()),
            ..Requested::default()
        };
        let error = resolve_with(&requested, &[]).unwrap_err().to_string();
        assert!(error.contains("no TLS support"), "{error}");
        assert!(error.contains("https://collector:4317/"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn zero_durations_in_code_are_refused() {
        let requested = Requested {
            interval: Some(Duration::ZERO),
            ..Requested::default()
        };
        assert!(matches!(
            resolve_with(&requested, &[]),
            Err(OtlpError::ZeroDuration("interval"))
        ));
    }

    #[test]
    fn bad_headers_are_named_and_their_values_never_shown() {
        for (name, value, reason) in [
            ("", "x", "empty"),
            ("bad header", "hunter2", "not a valid HTTP header name"),
            ("x-key", "hunter2\n", "visible ASCII"),
            ("x-key", "hünter2", "visible ASCII"),
            ("x-key-bin", "hunter2", "-bin"),
        ] {
            let mut requested = Requested::default();
            requested.headers.insert(name.into(), value.into());
            let error = resolve_with(&requested, &[]).unwrap_err().to_string();
            assert!(error.contains(reason), "{name:?}: {error}");
            assert!(!error.contains("hunter2"), "{name:?}: {error}");
            assert!(!error.contains("hünter2"), "{name:?}: {error}");
        }
    }

    #[test]
    fn environment_headers_are_known_by_name_and_kept_as_secrets() {
        let mut requested = Requested::default();
        requested
            .headers
            .insert("x-api-key".into(), "from-file".into());
        let env = [(HEADERS, "X-Api-Key=from%20env, other = two")];
        let resolved = resolve_with(&requested, &env).unwrap();
        assert_eq!(resolved.env_header_names, ["x-api-key", "other"]);
        assert!(resolved.secrets.contains(&"from-file".to_owned()));
        assert!(resolved.secrets.contains(&"from env".to_owned()));
        assert!(resolved.secrets.contains(&"two".to_owned()));
        let debug = format!("{resolved:?}");
        assert!(
            !debug.contains("from-file") && !debug.contains("from env"),
            "{debug}"
        );
    }

    #[test]
    fn the_daemon_turns_otlp_on_for_any_exporter_variable_unless_the_sdk_is_disabled() {
        let vars = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        assert!(!enabled_by(vars(&[("PATH", "/bin")])));
        assert!(enabled_by(vars(&[(ENDPOINT, "http://c:4317")])));
        assert!(enabled_by(vars(&[(HEADERS, "a=b")])));
        assert!(!enabled_by(vars(&[(ENDPOINT, " ")])));
        assert!(!enabled_by(vars(&[(INTERVAL, "1000")])));
        assert!(!enabled_by(vars(&[
            (ENDPOINT, "http://c:4317"),
            (SDK_DISABLED, "TRUE")
        ])));
        assert!(enabled_by(vars(&[
            (ENDPOINT, "http://c:4317"),
            (SDK_DISABLED, "false")
        ])));
    }

    #[test]
    fn scrubbing_replaces_every_secret() {
        let secrets = vec!["hunter2".to_owned(), String::new()];
        assert_eq!(
            scrub("auth hunter2 failed: hunter2", &secrets),
            "auth <redacted> failed: <redacted>"
        );
    }
}
