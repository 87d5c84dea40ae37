//! The web config (`--web.config.file`): reading it into a [`WebConfig`],
//! updating a served one, and the middlewares that apply its per-request
//! policy (basic auth, rate limit, response headers). The format and where it
//! differs from the exporter-toolkit are documented on [`WebConfig`].
//!
//! Design: the leaf modules own one concern each with its own settings type
//! and never import the reader or this module: [`auth`] (users and bcrypt),
//! [`rate_limit`] (the token bucket), [`headers`] (allowed response headers),
//! [`tls`] (rustls config, client-certificate policies, renewals), [`secret`]
//! and [`error`]. [`read`] turns the YAML into those settings; this module
//! composes them into a [`WebConfig`] and serves them.

mod auth;
mod error;
mod failures;
mod hash_slots;
mod headers;
mod rate_limit;
mod read;
mod secret;
mod tls;

pub use error::{WebConfigError, WebConfigPosition};

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};

use auth::BasicAuth;
use headers::ResponseHeaders;
use rate_limit::RateLimiter;
use tls::TlsServer;

use crate::sync;

/// The Prometheus exporter-toolkit web config (`--web.config.file`): TLS,
/// basic auth, extra response headers and a rate limit, in the YAML format
/// node_exporter and blackbox_exporter read — the file an operator already has
/// for them works here.
///
/// It is what [`Server`](crate::http::Server) needs to serve TLS, check basic
/// auth, add response headers and limit the request rate. Cheap to clone;
/// clones share the TLS state, the auth cache and
/// [`update`](WebConfig::update)s. [`WebConfig::default()`] is plain HTTP
/// without auth.
///
/// Reading the file checks everything in it: unknown keys, wrong types,
/// impossible combinations, unreadable certificate files and malformed bcrypt
/// hashes are each a [`WebConfigError`] naming the file, the line and the key.
/// No error, log line or `Debug` output ever shows a secret — a bcrypt hash,
/// an inline private key, a password.
///
/// # The format
///
/// ```yaml
/// tls_server_config:
///   cert_file: server.pem        # or `cert:` with the PEM inline
///   key_file: server.key         # or `key:` with the PEM inline
///   client_auth_type: RequireAndVerifyClientCert
///   client_ca_file: ca.pem       # or `client_ca:` with the PEM inline
///   client_allowed_sans: [ prometheus.example ]
///   min_version: TLS12
///   max_version: TLS13
///   cipher_suites: [ TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 ]
///   curve_preferences: [ X25519, CurveP256 ]
///   prefer_server_cipher_suites: true
/// http_server_config:
///   http2: true
///   headers:
///     X-Frame-Options: deny
/// basic_auth_users:
///   prometheus: $2y$10$...       # bcrypt, e.g. `htpasswd -nBC 10 "" | tr -d ':\n'`
/// rate_limit:
///   interval: 1s
///   burst: 20
/// ```
///
/// Relative paths are relative to the web config file's directory, as in the
/// exporter-toolkit. An empty file, or one without `tls_server_config`, serves
/// plain HTTP.
///
/// # Where mqtt-pulse differs from the exporter-toolkit, on purpose
///
/// * **Read at start and on reload.** The toolkit re-reads the whole file on
///   every request; here it is read when the daemon starts (a bad file stops
///   it with one line) and again on SIGHUP or `POST /-/reload`, with the
///   targets' config: a bad file, or one that turns TLS on or off or changes
///   `http2` (which takes a restart), fails the reload and changes nothing
///   (see [`WebConfig::update`]). Between reloads the certificate, key and
///   client CA *files* are followed: they are read on every new connection (a
///   few KB, off the async workers) and, when their contents changed, loaded,
///   so a renewed certificate is served from the next connection on. A
///   renewal that cannot be loaded (half-written files, a key that does not
///   match) is logged and the previous certificate stays in use.
/// * **Health endpoints stay open.** `GET /-/healthy` and `GET /-/ready`
///   answer without basic auth and are not rate limited, so container and
///   load-balancer probes work without credentials; they say nothing but
///   "Healthy"/"Ready". Everything else (`/metrics`, `/`, `POST /-/reload`,
///   unknown paths) needs the credentials when `basic_auth_users` is set. The
///   toolkit protects every path.
/// * **TLS 1.2 and 1.3 only.** `min_version`/`max_version` `TLS10` or `TLS11`
///   are an error rather than being raised silently: the TLS library (rustls)
///   does not speak them, and a file that asks for them should not start with
///   a different policy than it states.
/// * **What rustls lacks is an error, never ignored:** `cipher_suites` may name
///   the six ECDHE AEAD suites of TLS 1.2 (and the three TLS 1.3 suites, which,
///   as in Go, are always on); `curve_preferences` may name `X25519`,
///   `CurveP256`, `CurveP384` (not `CurveP521`).
/// * **Settings that would be silently dropped are errors:** TLS settings
///   without a certificate, `rate_limit.burst` without an `interval` or with an
///   interval but a burst of 0, `client_allowed_sans` with a
///   `client_auth_type` that lets clients connect without a certificate, a
///   verifying `client_auth_type` without a client CA.
/// * `client_auth_type: RequestClientCert` and `RequireAnyClientCert` accept a
///   client certificate without checking who signed it, as in Go: only
///   `RequireAndVerifyClientCert` authenticates clients.
///
/// Basic-auth passwords are checked with bcrypt on a blocking thread (at most
/// half the CPUs at a time, each hash holding its slot until it is done, even
/// if the client hangs up); a user and password that passed are remembered
/// (as a salted SHA-256, never the password) so a scraper pays for bcrypt
/// once, not on every scrape. Wrong passwords are limited per client address:
/// after 5 failures (or attempts in flight) an address is answered `429` with
/// `Retry-After`, without hashing, and gets one more attempt every 12 s; an
/// address with nothing failed lately is checked ahead of the others, so a
/// correct login gets through a wrong-password flood from other addresses
/// within about two hash times. Too many logins waiting for bcrypt at once
/// (more than 64) are answered `503` at once.
#[derive(Clone, Default)]
pub struct WebConfig {
    /// The file it was read from; `None` for [`WebConfig::default()`].
    path: Option<PathBuf>,
    pub(crate) tls: Option<Arc<TlsServer>>,
    pub(crate) http2: bool,
    /// What every request is checked against, shared by the clones and
    /// replaced by [`WebConfig::update`].
    policy: Arc<RwLock<Arc<Policy>>>,
    /// Requests refused by basic auth, by reason; kept across updates, like
    /// the policy's cell (clones share it).
    auth_refusals: AuthRefusals,
}

/// `mqtt_pulse_web_auth_refusals_total{reason}`: answers `401` (no or wrong
/// credentials), `429` (an address over its failure budget) and `503` (every
/// hash slot and the queue taken) — what an operator needs to tell a
/// misconfigured scraper from an attack from an overloaded daemon. It lives
/// here, not in the exporter, because the middleware that decides is here;
/// [`WebConfig::register_metrics`] puts it on the exporter's registry.
#[derive(Clone)]
struct AuthRefusals(prometheus::IntCounterVec);

impl Default for AuthRefusals {
    fn default() -> Self {
        let counter = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "mqtt_pulse_web_auth_refusals_total",
                "Requests refused by the web config's basic auth, by reason: unauthorized \
                 (401, no or wrong credentials), too_many_failures (429, the address failed \
                 too often), busy (503, too many logins being checked).",
            ),
            &["reason"],
        )
        .expect("a valid metric name and label");
        // Every reason exists from the start, so an alert on its rate sees the
        // first refusal.
        for reason in auth::REFUSAL_REASONS {
            counter.with_label_values(&[reason]);
        }
        AuthRefusals(counter)
    }
}

/// The per-request part of a web config.
#[derive(Default)]
pub(crate) struct Policy {
    pub(crate) headers: ResponseHeaders,
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
            .field("headers", &policy.headers.names())
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
        let read::Sections {
            tls,
            http2,
            headers,
            auth,
            rate_limit,
        } = read::sections(text, path)?;
        let policy = Policy {
            headers,
            auth,
            rate_limit,
        };
        Ok(WebConfig {
            path: Some(path.to_owned()),
            tls: tls.map(Arc::new),
            http2,
            policy: Arc::new(RwLock::new(Arc::new(policy))),
            auth_refusals: AuthRefusals::default(),
        })
    }

    /// Registers `mqtt_pulse_web_auth_refusals_total{reason}` — requests
    /// basic auth refused: `unauthorized` (401), `too_many_failures` (429),
    /// `busy` (503) — on `registry`, typically the exporter's
    /// ([`MetricsHandle::registry`](crate::exporter::metrics::MetricsHandle::registry)).
    /// Counted whether registered or not; clones and [`update`](Self::update)s
    /// share the counter.
    ///
    /// # Errors
    /// [`prometheus::Error`] when `registry` already has a metric of that name.
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.auth_refusals.0.clone()))
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
        *sync::write(&self.policy) = policy;
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
        Arc::clone(&sync::read(&self.0))
    }
}

impl WebConfig {
    /// `router` with the rate limit and, inside it, basic auth: a request
    /// over the rate is refused before bcrypt runs.
    pub(crate) fn check_requests(&self, router: Router) -> Router {
        let policy = self.live_policy();
        let auth = (policy.clone(), self.auth_refusals.clone());
        router
            .layer(from_fn_with_state(auth, require_basic_auth))
            .layer(from_fn_with_state(policy, rate_limit))
    }

    /// `router` with `http_server_config.headers` set on every response,
    /// errors included.
    pub(crate) fn set_configured_headers(&self, router: Router) -> Router {
        router.layer(from_fn_with_state(
            self.live_policy(),
            add_configured_headers,
        ))
    }
}

/// The endpoints probes poll (see [`router`](crate::http::router)): never
/// rate limited or asked for credentials.
fn is_probe(path: &str) -> bool {
    matches!(path, "/-/healthy" | "/-/ready")
}

/// Middleware: passes the health endpoints and requests with valid
/// credentials, answers everything else `401` with a `WWW-Authenticate`
/// challenge — or `429` when the client's address has failed too often, `503`
/// when too many logins are being checked (see `auth`). The address is the
/// connection's ([`ConnectInfo`], which the server sets). Refusals are
/// counted by reason.
async fn require_basic_auth(
    State((policy, refusals)): State<(LivePolicy, AuthRefusals)>,
    request: Request,
    next: Next,
) -> Response {
    let policy = policy.now();
    let verdict = match &policy.auth {
        Some(_) if is_probe(request.uri().path()) => auth::Verdict::Pass,
        Some(auth) => {
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(address)| address.ip());
            auth.check(request.headers().get(header::AUTHORIZATION), peer)
                .await
        }
        None => auth::Verdict::Pass,
    };
    let Some(reason) = verdict.refusal_reason() else {
        return next.run(request).await;
    };
    refusals.0.with_label_values(&[reason]).inc();
    tracing::debug!(
        path = request.uri().path(),
        ?verdict,
        "refused: no valid basic-auth credentials"
    );
    auth::refusal(verdict)
}

/// Middleware: `429` when the rate limit's bucket is empty; the health
/// endpoints pass.
async fn rate_limit(State(policy): State<LivePolicy>, request: Request, next: Next) -> Response {
    let allowed = match &policy.now().rate_limit {
        Some(limiter) => is_probe(request.uri().path()) || limiter.allow(),
        None => true,
    };
    if allowed {
        return next.run(request).await;
    }
    (StatusCode::TOO_MANY_REQUESTS, "429 Too Many Requests\n").into_response()
}

/// Middleware: sets `http_server_config.headers` on every response.
async fn add_configured_headers(
    State(policy): State<LivePolicy>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    policy.now().headers.set_on(&mut response);
    response
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
}
