//! The Prometheus exporter-toolkit web config (`--web.config.file`): TLS,
//! basic auth, extra response headers and a rate limit, in the YAML format
//! node_exporter and blackbox_exporter read — the file an operator already has
//! for them works here.
//!
//! It owns reading that file into a [`WebConfig`] and every check made on it:
//! unknown keys, wrong types, impossible combinations, unreadable certificate
//! files and malformed bcrypt hashes are each a [`WebConfigError`] naming the
//! file, the line and the key. It must never echo a secret — a bcrypt hash, an
//! inline private key, a password — in an error, a log line or `Debug` output.
//!
//! # The format
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.pem        # or `cert:` with the PEM inline
//!   key_file: server.key         # or `key:` with the PEM inline
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: ca.pem       # or `client_ca:` with the PEM inline
//!   client_allowed_sans: [ prometheus.example ]
//!   min_version: TLS12
//!   max_version: TLS13
//!   cipher_suites: [ TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 ]
//!   curve_preferences: [ X25519, CurveP256 ]
//!   prefer_server_cipher_suites: true
//! http_server_config:
//!   http2: true
//!   headers:
//!     X-Frame-Options: deny
//! basic_auth_users:
//!   prometheus: $2y$10$...       # bcrypt, e.g. `htpasswd -nBC 10 "" | tr -d ':\n'`
//! rate_limit:
//!   interval: 1s
//!   burst: 20
//! ```
//!
//! Relative paths are relative to the web config file's directory, as in the
//! exporter-toolkit. An empty file, or one without `tls_server_config`, serves
//! plain HTTP.
//!
//! # Where mqtt-pulse differs from the exporter-toolkit, on purpose
//!
//! * **Read at start and on reload.** The toolkit re-reads the whole file on
//!   every request; here it is read when the daemon starts (a bad file stops
//!   it with one line) and again on SIGHUP or `POST /-/reload`, with the
//!   targets' config: a bad file, or one that turns TLS on or off or changes
//!   `http2` (which takes a restart), fails the reload and changes nothing
//!   (see [`WebConfig::update`]). Between reloads the certificate, key and
//!   client CA *files* are followed: they are read on every new connection (a
//!   few KB, off the async workers) and, when their contents changed, loaded,
//!   so a renewed certificate is served from the next connection on. A
//!   renewal that cannot be loaded (half-written files, a key that does not
//!   match) is logged and the previous certificate stays in use.
//! * **Health endpoints stay open.** `GET /-/healthy` and `GET /-/ready`
//!   answer without basic auth and are not rate limited, so container and
//!   load-balancer probes work without credentials; they say nothing but
//!   "Healthy"/"Ready". Everything else (`/metrics`, `/`, `POST /-/reload`,
//!   unknown paths) needs the credentials when `basic_auth_users` is set. The
//!   toolkit protects every path.
//! * **TLS 1.2 and 1.3 only.** `min_version`/`max_version` `TLS10` or `TLS11`
//!   are an error rather than being raised silently: the TLS library (rustls)
//!   does not speak them, and a file that asks for them should not start with
//!   a different policy than it states.
//! * **What rustls lacks is an error, never ignored:** `cipher_suites` may name
//!   the six ECDHE AEAD suites of TLS 1.2 (and the three TLS 1.3 suites, which,
//!   as in Go, are always on); `curve_preferences` may name `X25519`,
//!   `CurveP256`, `CurveP384` (not `CurveP521`).
//! * **Settings that would be silently dropped are errors:** TLS settings
//!   without a certificate, `rate_limit.burst` without an `interval` or with an
//!   interval but a burst of 0, `client_allowed_sans` with a
//!   `client_auth_type` that lets clients connect without a certificate, a
//!   verifying `client_auth_type` without a client CA.
//! * `client_auth_type: RequestClientCert` and `RequireAnyClientCert` accept a
//!   client certificate without checking who signed it, as in Go: only
//!   `RequireAndVerifyClientCert` authenticates clients.
//!
//! Basic-auth passwords are checked with bcrypt on a blocking thread (at most
//! half the CPUs at a time); a user and password that passed are remembered
//! (as a salted SHA-256, never the password) so a scraper pays for bcrypt
//! once, not on every scrape.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_saphyr::{MessageFormatter as _, Spanned, UserMessageFormatter};

use super::auth::BasicAuth;
use super::limits::RateLimiter;
use super::tls::{ClientAuth, PemSource, TlsServer, TlsSettings, TlsVersions};

/// A loaded and checked web config: what [`Server`](super::Server) needs to
/// serve TLS, check basic auth, add response headers and limit the request
/// rate. Cheap to clone; clones share the TLS state, the auth cache and
/// [`update`](WebConfig::update)s.
///
/// [`WebConfig::default()`] is plain HTTP without auth.
#[derive(Clone, Default)]
pub struct WebConfig {
    /// The file it was read from; `None` for [`WebConfig::default()`].
    path: Option<PathBuf>,
    pub(crate) tls: Option<Arc<TlsServer>>,
    pub(crate) http2: bool,
    /// What every request is checked against, shared by the clones and
    /// replaced by [`WebConfig::update`].
    policy: Arc<RwLock<Arc<Policy>>>,
}

/// The per-request part of a web config.
#[derive(Default)]
pub(crate) struct Policy {
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) auth: Option<BasicAuth>,
    pub(crate) rate_limit: Option<RateLimiter>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the hashes, never an inline key: only what is configured.
        let policy = self.policy();
        f.debug_struct("WebConfig")
            .field("path", &self.path)
            .field("tls", &self.tls.is_some())
            .field("http2", &self.http2)
            .field(
                "headers",
                &policy.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field(
                "basic_auth_users",
                &policy.auth.as_ref().map(BasicAuth::user_count),
            )
            .field("rate_limit", &policy.rate_limit)
            .finish()
    }
}

impl WebConfig {
    /// Reads and checks the web config file at `path`, including the
    /// certificate, key and client CA files it names (relative to the file's
    /// directory) and the format of every bcrypt hash.
    ///
    /// Reads files and parses certificates: call it at startup, or from a
    /// blocking context.
    ///
    /// # Errors
    ///
    /// [`WebConfigError`]: the file cannot be read, is not YAML of this
    /// format, or holds a value that cannot be used. Its `Display` is one
    /// line with the file, line and column where known.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, WebConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }

    /// Checks `text` as if it were the content of the file at `path` (which
    /// names the file in errors and anchors relative paths).
    ///
    /// # Errors
    ///
    /// As [`WebConfig::load`], except that `path` itself is not read.
    pub fn from_yaml(text: &str, path: impl AsRef<Path>) -> Result<Self, WebConfigError> {
        let path = path.as_ref();
        let raw = parse(text, path)?;
        let reader = Reader {
            file: path,
            dir: path.parent().unwrap_or_else(|| Path::new("")),
        };
        let http = raw.http_server_config.unwrap_or_default();
        let http2 = http.http2.is_none_or(|http2| http2.value);
        let tls = match raw.tls_server_config {
            Some(tls) => reader.tls(tls, http2)?,
            None => None,
        };
        let policy = Policy {
            headers: reader.headers(http.headers)?,
            auth: reader.users(raw.basic_auth_users)?,
            rate_limit: reader.rate_limit(raw.rate_limit)?,
        };
        Ok(WebConfig {
            path: Some(path.to_owned()),
            tls: tls.map(Arc::new),
            http2,
            policy: Arc::new(RwLock::new(Arc::new(policy))),
        })
    }

    /// Serves `newer` from now on wherever this config (or a clone of it) is
    /// served: users, headers and rate limit from the next request, TLS
    /// settings and certificates from the next connection. Connections already
    /// open keep the TLS session they have. The rate limit starts full, and
    /// each scraper's password is checked with bcrypt once more.
    ///
    /// What the listeners were started with cannot change: turning TLS on or
    /// off, or `http2`, needs a restart.
    ///
    /// ```no_run
    /// # use mqtt_pulse::http::WebConfig;
    /// # async fn reload() -> Result<(), Box<dyn std::error::Error>> {
    /// let serving = WebConfig::load("web-config.yml")?;
    /// // … serve with clones of `serving`; when the file changed:
    /// serving.update(WebConfig::load("web-config.yml")?).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`WebConfigError::NeedsRestart`] when `newer` differs in what needs a
    /// restart; nothing changes then.
    pub async fn update(&self, newer: WebConfig) -> Result<(), WebConfigError> {
        self.check_update(&newer)?;
        if let (Some(tls), Some(newer_tls)) = (&self.tls, &newer.tls) {
            tls.replace_with(newer_tls).await;
        }
        let policy = newer.policy();
        *self.policy.write().unwrap_or_else(PoisonError::into_inner) = policy;
        Ok(())
    }

    /// Whether [`update`](Self::update) would take `newer`.
    ///
    /// # Errors
    ///
    /// As [`update`](Self::update).
    pub fn check_update(&self, newer: &WebConfig) -> Result<(), WebConfigError> {
        let what = if self.is_tls() != newer.is_tls() {
            if newer.is_tls() {
                "tls_server_config was added (turning TLS on)"
            } else {
                "tls_server_config was removed (turning TLS off)"
            }
        } else if self.is_tls() && self.http2 != newer.http2 {
            "http_server_config.http2 changed"
        } else {
            return Ok(());
        };
        Err(WebConfigError::NeedsRestart {
            path: newer.path.clone().unwrap_or_default(),
            what,
        })
    }

    /// What a request is checked against now.
    pub(crate) fn policy(&self) -> Arc<Policy> {
        self.live_policy().now()
    }

    /// The policy, for middlewares that read it on every request.
    pub(crate) fn live_policy(&self) -> LivePolicy {
        LivePolicy(Arc::clone(&self.policy))
    }

    /// Whether connections are served with TLS.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether requests (other than the health endpoints) need basic auth.
    #[must_use]
    pub fn has_basic_auth(&self) -> bool {
        self.policy().auth.is_some()
    }
}

/// The web config's per-request policy as it is now; see [`WebConfig::update`].
#[derive(Clone)]
pub(crate) struct LivePolicy(Arc<RwLock<Arc<Policy>>>);

impl LivePolicy {
    pub(crate) fn now(&self) -> Arc<Policy> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Where in a web config file something is: the file, and the line and column
/// when known. Displays as `file:line:column` or `file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    path: PathBuf,
    line_column: Option<(u64, u64)>,
}

impl Position {
    /// The web config file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The line (from 1), when known.
    #[must_use]
    pub fn line(&self) -> Option<u64> {
        self.line_column.map(|(line, _)| line)
    }

    /// The column (from 1), when known.
    #[must_use]
    pub fn column(&self) -> Option<u64> {
        self.line_column.map(|(_, column)| column)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line_column {
            Some((line, column)) => write!(f, "{}:{line}:{column}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// Why a web config file cannot be used. `Display` is one line naming the
/// file (and the line and key where known), and never holds a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebConfigError {
    /// The file cannot be read.
    #[error("cannot read the web config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The file is not YAML of the web-config shape: a syntax error, an
    /// unknown or repeated key, a value of the wrong type.
    #[error("{at}: {message}")]
    Parse {
        /// Where.
        at: Position,
        /// What is wrong.
        message: String,
    },
    /// A value has the right shape but cannot be used: an unknown
    /// `client_auth_type`, a missing key file, a malformed bcrypt hash, …
    #[error("{at}: {message}")]
    Invalid {
        /// Where.
        at: Position,
        /// What is wrong and what to do.
        message: String,
    },
    /// A reloaded file changes what the listeners were started with; see
    /// [`WebConfig::update`].
    #[error(
        "{}: {what}, which takes a restart; nothing in the file was applied",
        path.display()
    )]
    NeedsRestart {
        /// The file.
        path: PathBuf,
        /// What changed.
        what: &'static str,
    },
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

/// A string that is never shown: `Debug` prints `<secret>`, and a value of
/// the wrong type is reported without its content.
#[derive(Clone)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
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
            at: Position {
                path: path.to_owned(),
                line_column: error.location().map(|l| (l.line(), l.column())),
            },
            message,
        }
    })
}

// ---------------------------------------------------------------------------------
// Checking what was written
// ---------------------------------------------------------------------------------

/// Line and column of a value, for errors.
pub(crate) type At = Option<(u64, u64)>;

fn at<T>(spanned: &Spanned<T>) -> At {
    let location = spanned.referenced;
    (location.line() > 0).then(|| (location.line(), location.column()))
}

/// A set value (`""` counts as unset, as in the exporter-toolkit).
fn given(text: Text) -> Option<Spanned<String>> {
    text.filter(|t| !t.value.is_empty())
}

struct Reader<'a> {
    file: &'a Path,
    dir: &'a Path,
}

impl Reader<'_> {
    fn invalid(&self, at: At, message: impl Into<String>) -> WebConfigError {
        WebConfigError::Invalid {
            at: Position {
                path: self.file.to_owned(),
                line_column: at,
            },
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

    /// `Some` when the section asks for TLS; `None` when it is empty.
    fn tls(&self, raw: RawTls, http2: bool) -> Result<Option<TlsServer>, WebConfigError> {
        let cert_file = given(raw.cert_file);
        let key_file = given(raw.key_file);
        let cert = given(raw.cert);
        let key = raw.key.filter(|k| !k.value.0.is_empty());
        let client_ca_file = given(raw.client_ca_file);
        let client_ca = given(raw.client_ca);
        let client_auth_type = given(raw.client_auth_type);
        let min_version = given(raw.min_version);
        let max_version = given(raw.max_version);

        let asks_for_tls = cert_file.is_some()
            || key_file.is_some()
            || cert.is_some()
            || key.is_some()
            || client_ca_file.is_some()
            || client_ca.is_some()
            || client_auth_type.is_some();
        if !asks_for_tls {
            // Tuning without a certificate would be dropped without a word:
            // the exporter-toolkit serves plain HTTP then.
            let tuning = [
                ("min_version", min_version.as_ref().map(at)),
                ("max_version", max_version.as_ref().map(at)),
                ("cipher_suites", raw.cipher_suites.as_ref().map(at)),
                ("curve_preferences", raw.curve_preferences.as_ref().map(at)),
                (
                    "prefer_server_cipher_suites",
                    raw.prefer_server_cipher_suites.as_ref().map(at),
                ),
                (
                    "client_allowed_sans",
                    raw.client_allowed_sans.as_ref().map(at),
                ),
            ];
            if let Some((key, Some(position))) = tuning.into_iter().find(|(_, p)| p.is_some()) {
                return Err(self.invalid(
                    position,
                    format!(
                        "tls_server_config.{key} is set but there is no certificate: \
                         set cert_file and key_file to serve TLS, or remove {key}"
                    ),
                ));
            }
            return Ok(None);
        }

        let cert_source = match (cert_file, cert) {
            (Some(_), Some(inline)) => {
                return Err(self.invalid(
                    at(&inline),
                    "tls_server_config: set cert_file or cert, not both",
                ));
            }
            (Some(file), None) => PemSource::File {
                key: "cert_file",
                path: self.path(&file.value),
                at: at(&file),
            },
            (None, Some(inline)) => PemSource::Inline {
                key: "cert",
                pem: inline.value.clone(),
                at: at(&inline),
            },
            (None, None) => {
                let position = key_file
                    .as_ref()
                    .map(at)
                    .or_else(|| key.as_ref().map(at))
                    .or_else(|| client_auth_type.as_ref().map(at))
                    .or_else(|| client_ca_file.as_ref().map(at))
                    .or_else(|| client_ca.as_ref().map(at))
                    .flatten();
                return Err(self.invalid(
                    position,
                    "tls_server_config has no certificate: set cert_file (or cert) and key_file (or key)",
                ));
            }
        };
        let cert_at = cert_source.at();
        let key_source = match (key_file, key) {
            (Some(_), Some(inline)) => {
                return Err(self.invalid(
                    at(&inline),
                    "tls_server_config: set key_file or key, not both",
                ));
            }
            (Some(file), None) => PemSource::File {
                key: "key_file",
                path: self.path(&file.value),
                at: at(&file),
            },
            (None, Some(inline)) => PemSource::Inline {
                key: "key",
                pem: inline.value.0.clone(),
                at: at(&inline),
            },
            (None, None) => {
                return Err(self.invalid(
                    cert_at,
                    format!(
                        "tls_server_config.{} is set but key_file (or key) is missing",
                        cert_source.key()
                    ),
                ));
            }
        };
        let client_ca_source = match (client_ca_file, client_ca) {
            (Some(_), Some(inline)) => {
                return Err(self.invalid(
                    at(&inline),
                    "tls_server_config: set client_ca_file or client_ca, not both",
                ));
            }
            (Some(file), None) => Some(PemSource::File {
                key: "client_ca_file",
                path: self.path(&file.value),
                at: at(&file),
            }),
            (None, Some(inline)) => Some(PemSource::Inline {
                key: "client_ca",
                pem: inline.value.clone(),
                at: at(&inline),
            }),
            (None, None) => None,
        };

        let (client_auth, client_auth_at) = match &client_auth_type {
            Some(value) => (self.client_auth(value)?, at(value)),
            None => (ClientAuth::NoClientCert, None),
        };
        if let Some(ca) = &client_ca_source
            && client_auth == ClientAuth::NoClientCert
        {
            return Err(self.invalid(
                ca.at(),
                format!(
                    "tls_server_config.{} is set but client_auth_type is NoClientCert, so it \
                     would not be used: set client_auth_type: RequireAndVerifyClientCert",
                    ca.key()
                ),
            ));
        }
        if client_auth.verifies() && client_ca_source.is_none() {
            return Err(self.invalid(
                client_auth_at,
                format!(
                    "tls_server_config.client_auth_type {} needs client_ca_file (or client_ca) \
                     to verify client certificates with",
                    client_auth.name()
                ),
            ));
        }
        let allowed_sans = match raw.client_allowed_sans {
            None => None,
            Some(sans) => {
                if !client_auth.requires_certificate() {
                    return Err(self.invalid(
                        at(&sans),
                        format!(
                            "tls_server_config.client_allowed_sans needs client_auth_type \
                             RequireAndVerifyClientCert (or RequireAnyClientCert), not {}: \
                             otherwise a client without a certificate gets in",
                            client_auth.name()
                        ),
                    ));
                }
                if sans.value.is_empty() {
                    return Err(self.invalid(
                        at(&sans),
                        "tls_server_config.client_allowed_sans is empty and would refuse every \
                         client: list the allowed SANs or remove it",
                    ));
                }
                Some(sans.value)
            }
        };

        let min = match &min_version {
            Some(value) => self.tls_version(value, "min_version")?,
            None => 12,
        };
        let max = match &max_version {
            Some(value) => self.tls_version(value, "max_version")?,
            None => 13,
        };
        if min > max {
            return Err(self.invalid(
                min_version.as_ref().and_then(at),
                format!("tls_server_config.min_version TLS{min} is above max_version TLS{max}"),
            ));
        }
        let versions = TlsVersions { min, max };

        let cipher_suites_at = raw.cipher_suites.as_ref().and_then(at);
        let tls12_suites = match raw.cipher_suites {
            None => None,
            Some(names) => Some(
                super::tls::tls12_suites(&names.value)
                    .map_err(|message| self.invalid(at(&names), message))?,
            ),
        };
        let kx_groups = match raw.curve_preferences {
            None => None,
            Some(names) => Some(
                super::tls::kx_groups(&names.value)
                    .map_err(|message| self.invalid(at(&names), message))?,
            ),
        };

        let settings = TlsSettings {
            cert: cert_source,
            key: key_source,
            client_ca: client_ca_source,
            client_auth,
            allowed_sans,
            versions,
            tls12_suites,
            cipher_suites_at,
            kx_groups,
            prefer_server_cipher_suites: raw
                .prefer_server_cipher_suites
                .is_none_or(|prefer| prefer.value),
            http2,
            web_config: self.file.to_owned(),
        };
        let server =
            TlsServer::new(settings).map_err(|error| self.invalid(error.at, error.message))?;
        Ok(Some(server))
    }

    fn client_auth(&self, value: &Spanned<String>) -> Result<ClientAuth, WebConfigError> {
        ClientAuth::from_name(&value.value).ok_or_else(|| {
            self.invalid(
                at(value),
                format!(
                    "tls_server_config.client_auth_type {:?} is unknown; expected one of \
                     NoClientCert, RequestClientCert, RequireAnyClientCert, \
                     VerifyClientCertIfGiven, RequireAndVerifyClientCert",
                    value.value
                ),
            )
        })
    }

    fn tls_version(&self, value: &Spanned<String>, key: &str) -> Result<u8, WebConfigError> {
        match value.value.as_str() {
            "TLS12" => Ok(12),
            "TLS13" => Ok(13),
            old @ ("TLS10" | "TLS11") => Err(self.invalid(
                at(value),
                format!(
                    "tls_server_config.{key} {old} is not supported: mqtt-pulse's TLS library \
                     (rustls) speaks only TLS12 and TLS13; use TLS12"
                ),
            )),
            other => Err(self.invalid(
                at(value),
                format!("tls_server_config.{key} {other:?} is unknown; expected TLS12 or TLS13"),
            )),
        }
    }

    fn headers(
        &self,
        headers: Option<BTreeMap<String, Spanned<String>>>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, WebConfigError> {
        /// The headers the exporter-toolkit lets an operator set, and the
        /// values it allows where it restricts them.
        const ALLOWED: [(&str, &[&str]); 5] = [
            ("Content-Security-Policy", &[]),
            ("X-Frame-Options", &["deny", "sameorigin"]),
            ("X-Content-Type-Options", &["nosniff"]),
            ("X-XSS-Protection", &[]),
            ("Strict-Transport-Security", &[]),
        ];
        let mut out = Vec::new();
        for (name, value) in headers.unwrap_or_default() {
            let Some((canonical, values)) = ALLOWED
                .iter()
                .find(|(allowed, _)| allowed.eq_ignore_ascii_case(&name))
            else {
                let names: Vec<&str> = ALLOWED.iter().map(|(n, _)| *n).collect();
                return Err(self.invalid(
                    at(&value),
                    format!(
                        "http_server_config.headers: {name:?} cannot be set; allowed: {}",
                        names.join(", ")
                    ),
                ));
            };
            // "Unset if blank", as the exporter-toolkit documents.
            if value.value.is_empty() {
                continue;
            }
            if !values.is_empty() && !values.iter().any(|v| v.eq_ignore_ascii_case(&value.value)) {
                return Err(self.invalid(
                    at(&value),
                    format!(
                        "http_server_config.headers.{canonical}: {:?} is not allowed; expected \
                         one of {}",
                        value.value,
                        values.join(", ")
                    ),
                ));
            }
            let header_value = HeaderValue::from_str(&value.value).map_err(|_| {
                self.invalid(
                    at(&value),
                    format!(
                        "http_server_config.headers.{canonical}: not a valid header value \
                         (control characters or non-ASCII)"
                    ),
                )
            })?;
            out.push((HeaderName::from_static(lowercase(canonical)), header_value));
        }
        Ok(out)
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
            if let Err(reason) = super::auth::check_hash(&hash.value.0) {
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

/// `HeaderName::from_static` wants lowercase; the allowed names are constants.
fn lowercase(name: &'static str) -> &'static str {
    match name {
        "Content-Security-Policy" => "content-security-policy",
        "X-Frame-Options" => "x-frame-options",
        "X-Content-Type-Options" => "x-content-type-options",
        "X-XSS-Protection" => "x-xss-protection",
        _ => "strict-transport-security",
    }
}

/// A duration as Go's `time.ParseDuration` reads it (what the exporter-toolkit
/// uses for `rate_limit.interval`): `0`, or numbers with units `ns`, `us`
/// (`µs`), `ms`, `s`, `m`, `h`, e.g. `1.5s`, `1m30s`. Negative durations are
/// `None`.
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
    fn an_empty_file_or_empty_sections_mean_plain_http_without_auth() {
        for text in [
            "",
            "# nothing yet\n",
            "---\ntls_server_config:\nbasic_auth_users:\n",
            "tls_server_config: {}\nhttp_server_config: {}\nbasic_auth_users: {}\n",
            "tls_server_config:\n  cert_file: \"\"\n  key_file: \"\"\n",
            "rate_limit:\n  interval: 0\n",
        ] {
            let config =
                WebConfig::from_yaml(text, "web.yml").unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert!(!config.is_tls() && !config.has_basic_auth(), "{text:?}");
            assert!(
                config.policy().rate_limit.is_none() && config.policy().headers.is_empty(),
                "{text:?}"
            );
        }
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
