//! The web config's `http_server_config.headers`: the response headers an
//! operator may set, checked as the exporter-toolkit checks them.
//!
//! It owns which headers may be set, with which values, and setting them on a
//! response. It must never let a header through that the toolkit refuses.

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;

/// The headers the exporter-toolkit lets an operator set, and the values it
/// allows where it restricts them.
const ALLOWED: [(&str, &[&str]); 5] = [
    ("Content-Security-Policy", &[]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-XSS-Protection", &[]),
    ("Strict-Transport-Security", &[]),
];

/// The checked headers, set on every response.
#[derive(Debug, Default)]
pub(crate) struct ResponseHeaders(Vec<(HeaderName, HeaderValue)>);

impl ResponseHeaders {
    /// Checks one `name: value` of the file and adds it; a blank value leaves
    /// the header unset ("unset if blank", as the exporter-toolkit documents).
    /// The error says what is wrong, naming the key.
    pub(crate) fn add(&mut self, name: &str, value: &str) -> Result<(), String> {
        let Some((canonical, values)) = ALLOWED
            .iter()
            .find(|(allowed, _)| allowed.eq_ignore_ascii_case(name))
        else {
            let names: Vec<&str> = ALLOWED.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "http_server_config.headers: {name:?} cannot be set; allowed: {}",
                names.join(", ")
            ));
        };
        if value.is_empty() {
            return Ok(());
        }
        if !values.is_empty() && !values.iter().any(|v| v.eq_ignore_ascii_case(value)) {
            return Err(format!(
                "http_server_config.headers.{canonical}: {value:?} is not allowed; expected one \
                 of {}",
                values.join(", ")
            ));
        }
        let header_value = HeaderValue::from_str(value).map_err(|_| {
            format!(
                "http_server_config.headers.{canonical}: not a valid header value (control \
                 characters or non-ASCII)"
            )
        })?;
        // `from_bytes` lowercases; every name in `ALLOWED` is a valid one.
        let header_name = HeaderName::from_bytes(canonical.as_bytes())
            .unwrap_or_else(|_| unreachable!("{canonical} is a valid header name"));
        self.0.push((header_name, header_value));
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names set, for `Debug` output.
    pub(crate) fn names(&self) -> Vec<&HeaderName> {
        self.0.iter().map(|(name, _)| name).collect()
    }

    /// Sets every header on `response`, replacing what it had.
    pub(crate) fn set_on(&self, response: &mut Response) {
        for (name, value) in &self.0 {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_headers_are_matched_without_case_and_blank_ones_stay_unset() {
        let mut headers = ResponseHeaders::default();
        headers.add("x-frame-options", "DENY").unwrap();
        headers.add("Content-Security-Policy", "").unwrap();
        assert_eq!(
            headers.names(),
            [&HeaderName::from_static("x-frame-options")]
        );
        let mut response = Response::new(axum::body::Body::empty());
        headers.set_on(&mut response);
        assert_eq!(response.headers()["x-frame-options"], "DENY");
    }

    #[test]
    fn other_headers_and_values_are_refused_naming_the_key() {
        let mut headers = ResponseHeaders::default();
        let error = headers.add("Server", "mqtt-pulse").unwrap_err();
        assert!(
            error.starts_with("http_server_config.headers: \"Server\" cannot be set"),
            "{error}"
        );
        let error = headers.add("X-Frame-Options", "allow").unwrap_err();
        assert!(
            error.contains("expected one of deny, sameorigin"),
            "{error}"
        );
        assert!(headers.add("X-XSS-Protection", "1\u{7f}").is_err());
        assert!(headers.is_empty());
    }
}
