//! `[otlp]`: where and how to push metrics over OTLP, read into an
//! [`OtlpConfig`]. Header values are often credentials: no message, warning
//! or `Debug` output shows one.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use url::Url;

use super::error::ConfigError;
use super::keys::OTLP_KEYS;
use super::reader::{Place, Span, TableReader, Value, in_file_order};
use crate::exporter::otlp::OtlpProtocol;

/// The `[otlp]` table: where and how to push metrics over OTLP.
///
/// `None` fields leave the choice to the OpenTelemetry SDK, which reads the
/// `OTEL_EXPORTER_OTLP_*` and `OTEL_METRIC_EXPORT_*` environment variables.
/// `Debug` shows header names only: values are often credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    endpoint: Option<Url>,
    protocol: OtlpProtocol,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    headers: BTreeMap<String, String>,
}

impl OtlpConfig {
    /// The collector's URL (`http://` or `https://`), as written.
    pub fn endpoint(&self) -> Option<&Url> {
        self.endpoint.as_ref()
    }

    /// The transport. Defaults to gRPC.
    pub fn protocol(&self) -> OtlpProtocol {
        self.protocol
    }

    /// How often metrics are pushed.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// How long one push may take.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Extra request headers (gRPC metadata), such as an API key.
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }
}

impl fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpConfig")
            .field("endpoint", &self.endpoint.as_ref().map(Url::as_str))
            .field("protocol", &self.protocol)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl TableReader<'_> {
    pub(super) fn otlp(&mut self, value: &Value<'_>) -> Result<OtlpConfig, ConfigError> {
        let place = Place::Table("[otlp]".to_owned());
        let table = self.table("otlp", &Place::Top, value)?;
        let mut otlp = OtlpConfig {
            endpoint: None,
            protocol: OtlpProtocol::default(),
            interval: None,
            timeout: None,
            headers: BTreeMap::new(),
        };
        for (key, value) in in_file_order(table) {
            match key.get_ref().as_ref() {
                "endpoint" => {
                    let text = self.string("endpoint", &place, value)?;
                    otlp.endpoint = Some(self.endpoint(text, &place, &value.span())?);
                }
                "protocol" => {
                    let name = self.string("protocol", &place, value)?;
                    otlp.protocol = match OtlpProtocol::from_name(name) {
                        Some(protocol) => protocol,
                        None => {
                            let reason =
                                format!("must be \"grpc\" or \"http/protobuf\", not {name:?}");
                            return Err(self.bad_value("protocol", &place, &value.span(), reason));
                        }
                    }
                }
                "interval" => {
                    otlp.interval = Some(self.positive_duration("interval", &place, value)?)
                }
                "timeout" => otlp.timeout = Some(self.positive_duration("timeout", &place, value)?),
                "headers" => otlp.headers = self.headers(value, &place)?,
                _ => return Err(self.unknown_key(key, &place, OTLP_KEYS, &[])),
            }
        }
        Ok(otlp)
    }

    fn endpoint(&self, text: &str, place: &Place, span: &Span) -> Result<Url, ConfigError> {
        let bad = |reason: String| self.bad_value("endpoint", place, span, reason);
        let url = Url::parse(text).map_err(|error| {
            bad(format!(
                "not a URL ({error}); write it like \"http://127.0.0.1:4317\""
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!(
                "unsupported scheme {:?}; use http:// or https://",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("the URL has no host".to_owned()));
        }
        Ok(url)
    }

    /// OTLP headers: HTTP header names, visible-ASCII values. The values are
    /// often credentials and are never quoted back.
    fn headers(
        &self,
        value: &Value<'_>,
        place: &Place,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let inner = place.nested("headers");
        let mut headers = BTreeMap::new();
        let mut lowercase_names = HashMap::new();
        for (key, value) in in_file_order(self.table("headers", place, value)?) {
            let name = key.get_ref().as_ref();
            let is_token_char =
                |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || !name.chars().all(is_token_char) {
                let reason = "a header name is letters, digits and !#$%&'*+-.^_`|~ only".to_owned();
                return Err(self.bad_value(name, &inner, &key.span(), reason));
            }
            if let Some(first) = lowercase_names.insert(name.to_ascii_lowercase(), name) {
                let reason = format!("repeats the header `{first}` (header names ignore case)");
                return Err(self.bad_value(name, &inner, &key.span(), reason));
            }
            let text = self.string(name, &inner, value)?;
            if !text.chars().all(|c| c == '\t' || (' '..='~').contains(&c)) {
                let reason = "a header value is visible ASCII, spaces and tabs only".to_owned();
                return Err(self.bad_value(name, &inner, &value.span(), reason));
            }
            headers.insert(name.to_owned(), text.to_owned());
        }
        Ok(headers)
    }
}
