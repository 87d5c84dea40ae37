//! Reading a web config file: the YAML as written (serde, with spans for
//! `file:line:col` errors), then each section checked and turned into the
//! settings type of the leaf module that owns it.
//!
//! It owns every message about what is wrong in the file. It must never echo
//! a secret: YAML snippets are off, and hashes and inline keys are [`Secret`]s.

mod tls;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::{MessageFormatter as _, Spanned, UserMessageFormatter};

use super::auth::{self, BasicAuth};
use super::error::{At, WebConfigError, WebConfigPosition};
use super::headers::ResponseHeaders;
use super::rate_limit::{RateLimiter, parse_go_duration};
use super::secret::Secret;
use super::tls::TlsServer;

/// What a web config file says, checked, in the leaf modules' types.
pub(super) struct Sections {
    pub(super) tls: Option<TlsServer>,
    pub(super) http2: bool,
    pub(super) headers: ResponseHeaders,
    pub(super) auth: Option<BasicAuth>,
    pub(super) rate_limit: Option<RateLimiter>,
}

/// Reads `text` as the web config file at `path` (which names the file in
/// errors and anchors relative paths). Reads the certificate files it names.
pub(super) fn sections(text: &str, path: &Path) -> Result<Sections, WebConfigError> {
    let raw = parse(text, path)?;
    let reader = WebConfigReader {
        file: path,
        dir: path.parent().unwrap_or_else(|| Path::new("")),
    };
    let http = raw.http_server_config.unwrap_or_default();
    let http2 = http.http2.is_none_or(|http2| http2.value);
    let tls = match raw.tls_server_config {
        Some(tls) => reader.tls(tls, http2)?,
        None => None,
    };
    Ok(Sections {
        tls,
        http2,
        headers: reader.headers(http.headers)?,
        auth: reader.users(raw.basic_auth_users)?,
        rate_limit: reader.rate_limit(raw.rate_limit)?,
    })
}

// ---------------------------------------------------------------------------------
// The file as written
// ---------------------------------------------------------------------------------

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, Spanned<Secret>>>,
    #[serde(default)]
    rate_limit: Option<RawRateLimit>,
}

/// A string value with its position; `""` counts as unset.
type Text = Option<Spanned<String>>;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    cert: Text,
    #[serde(default)]
    key: Option<Spanned<Secret>>,
    #[serde(default)]
    client_ca: Text,
    #[serde(default)]
    cert_file: Text,
    #[serde(default)]
    key_file: Text,
    #[serde(default)]
    client_auth_type: Text,
    #[serde(default)]
    client_ca_file: Text,
    #[serde(default)]
    client_allowed_sans: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    min_version: Text,
    #[serde(default)]
    max_version: Text,
    #[serde(default)]
    cipher_suites: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    curve_preferences: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<Spanned<bool>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default)]
    http2: Option<Spanned<bool>>,
    #[serde(default)]
    headers: Option<BTreeMap<String, Spanned<String>>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    #[serde(default)]
    interval: Text,
    #[serde(default)]
    burst: Option<Spanned<i64>>,
}

fn parse(text: &str, path: &Path) -> Result<RawConfig, WebConfigError> {
    let mut options = serde_saphyr::options::Options::default();
    // A snippet would quote the file, and the file holds secrets.
    options.with_snippet = false;
    serde_saphyr::from_str_with_options(text, options).map_err(|error| {
        let error = error.without_snippet();
        let message = UserMessageFormatter.format_message(error);
        // Control characters (a tab in a key, say) must not break the line.
        let message: String = message.chars().flat_map(char::escape_debug).collect();
        WebConfigError::Parse {
            at: WebConfigPosition::new(path, error.location().map(|l| (l.line(), l.column()))),
            message,
        }
    })
}

// ---------------------------------------------------------------------------------
// Checking what was written
// ---------------------------------------------------------------------------------

pub(super) fn at<T>(spanned: &Spanned<T>) -> At {
    let location = spanned.referenced;
    (location.line() > 0).then(|| (location.line(), location.column()))
}

/// A set value (`""` counts as unset, as in the exporter-toolkit).
pub(super) fn given(text: Text) -> Option<Spanned<String>> {
    text.filter(|t| !t.value.is_empty())
}

/// Checks the sections of one file; errors name the file.
struct WebConfigReader<'a> {
    file: &'a Path,
    dir: &'a Path,
}

impl WebConfigReader<'_> {
    fn invalid(&self, at: At, message: impl Into<String>) -> WebConfigError {
        WebConfigError::Invalid {
            at: WebConfigPosition::new(self.file, at),
            message: message.into(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        let path = Path::new(name);
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.dir.join(path)
        }
    }

    fn headers(
        &self,
        headers: Option<BTreeMap<String, Spanned<String>>>,
    ) -> Result<ResponseHeaders, WebConfigError> {
        let mut checked = ResponseHeaders::default();
        for (name, value) in headers.unwrap_or_default() {
            checked
                .add(&name, &value.value)
                .map_err(|message| self.invalid(at(&value), message))?;
        }
        Ok(checked)
    }

    fn users(
        &self,
        users: Option<BTreeMap<String, Spanned<Secret>>>,
    ) -> Result<Option<BasicAuth>, WebConfigError> {
        let users = users.unwrap_or_default();
        if users.is_empty() {
            return Ok(None);
        }
        let mut hashes = BTreeMap::new();
        for (user, hash) in users {
            if let Err(reason) = auth::check_hash(&hash.value.0) {
                // The reason is bcrypt's fixed text about the format; the hash
                // itself is never shown.
                return Err(self.invalid(
                    at(&hash),
                    format!(
                        "basic_auth_users: the password hash of user {user:?} is not a bcrypt \
                         hash ({reason}); make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                    ),
                ));
            }
            hashes.insert(user, hash.value);
        }
        Ok(Some(BasicAuth::new(hashes)))
    }

    fn rate_limit(&self, raw: Option<RawRateLimit>) -> Result<Option<RateLimiter>, WebConfigError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        let burst = match &raw.burst {
            Some(burst) => Some((
                u32::try_from(burst.value).map_err(|_| {
                    self.invalid(
                        at(burst),
                        format!(
                            "rate_limit.burst {} is out of range (0 to {})",
                            burst.value,
                            u32::MAX
                        ),
                    )
                })?,
                at(burst),
            )),
            None => None,
        };
        let Some(interval) = given(raw.interval) else {
            if let Some((_, burst_at)) = burst {
                return Err(self.invalid(
                    burst_at,
                    "rate_limit.burst is set but rate_limit.interval is not, so there would be \
                     no rate limit: set interval (e.g. 1s) or remove burst",
                ));
            }
            return Ok(None);
        };
        let period = parse_go_duration(&interval.value).ok_or_else(|| {
            self.invalid(
                at(&interval),
                format!(
                    "rate_limit.interval {:?} is not a duration such as 1s, 500ms or 1m30s",
                    interval.value
                ),
            )
        })?;
        if period.is_zero() {
            // "set to 0 to disable rate limiter", as documented.
            return Ok(None);
        }
        let burst = match burst {
            Some((burst, _)) if burst >= 1 => burst,
            Some((_, burst_at)) => {
                return Err(self.invalid(
                    burst_at,
                    "rate_limit.burst must be at least 1 when an interval is set, or every \
                     request would be refused",
                ));
            }
            None => {
                return Err(self.invalid(
                    at(&interval),
                    "rate_limit.interval is set but rate_limit.burst is not, so every request \
                     would be refused: set burst (at least 1)",
                ));
            }
        };
        Ok(Some(RateLimiter::new(period, burst)))
    }
}
