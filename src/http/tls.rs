//! HTTPS for the exporter: the rustls server config built from a web config's
//! `tls_server_config`, client-certificate policies, and following certificate
//! renewals on disk.
//!
//! It owns turning PEM files into a rustls `ServerConfig` and swapping in a new
//! one when the files change. Design: the acceptor of every new connection
//! first reads the certificate, key and client CA files (on a blocking thread,
//! one connection at a time — a few KB, cheaper than the handshake that
//! follows) and compares them with what was loaded; only when the bytes
//! differ is a new config built, which that very connection already uses.
//! Comparing contents rather than modification times cannot miss a rewrite
//! within one clock tick. A failed reload (half-written files, a key that
//! does not match) is logged and the previous config kept, and the same
//! contents are not retried until they change again. Checking per connection
//! rather than on a timer means a renewed certificate is served from the very
//! next connection, with no background task to stop.
//!
//! It must never put key material in an error or a log line (PEM parse errors
//! can quote a line of the file, so they are reported without detail), and
//! never block an async worker on the file system.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum_server::accept::Accept;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, SupportedKxGroup, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme, SupportedCipherSuite, SupportedProtocolVersion,
};

use super::web_config::At;

/// Where a PEM item comes from: a file named in the web config (followed for
/// changes) or the web config itself.
#[derive(Clone)]
pub(crate) enum PemSource {
    File {
        /// The web config key, e.g. `cert_file`.
        key: &'static str,
        path: PathBuf,
        at: At,
    },
    Inline {
        /// The web config key, e.g. `cert`.
        key: &'static str,
        pem: String,
        at: At,
    },
}

impl fmt::Debug for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemSource::File { key, path, .. } => write!(f, "{key}: {}", path.display()),
            PemSource::Inline { key, .. } => write!(f, "{key}: <inline>"),
        }
    }
}

impl PemSource {
    pub(crate) fn at(&self) -> At {
        match self {
            PemSource::File { at, .. } | PemSource::Inline { at, .. } => *at,
        }
    }

    pub(crate) fn key(&self) -> &'static str {
        match self {
            PemSource::File { key, .. } | PemSource::Inline { key, .. } => key,
        }
    }

    fn path(&self) -> Option<&Path> {
        match self {
            PemSource::File { path, .. } => Some(path),
            PemSource::Inline { .. } => None,
        }
    }

    /// `tls_server_config.cert_file /etc/x.pem` or `tls_server_config.cert`.
    fn describe(&self) -> String {
        match self {
            PemSource::File { key, path, .. } => {
                format!("tls_server_config.{key} {}", path.display())
            }
            PemSource::Inline { key, .. } => format!("tls_server_config.{key}"),
        }
    }

    fn error(&self, problem: impl fmt::Display) -> TlsBuildError {
        TlsBuildError {
            at: self.at(),
            message: format!("{}: {problem}", self.describe()),
        }
    }

    fn bytes(&self) -> Result<Vec<u8>, TlsBuildError> {
        match self {
            PemSource::File { path, .. } => std::fs::read(path)
                .map_err(|error| self.error(format_args!("cannot read the file: {error}"))),
            PemSource::Inline { pem, .. } => Ok(pem.clone().into_bytes()),
        }
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsBuildError> {
        let bytes = self.bytes()?;
        let certificates = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| self.error("not valid PEM"))?;
        if certificates.is_empty() {
            return Err(self.error("holds no PEM certificate (BEGIN CERTIFICATE)"));
        }
        Ok(certificates)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsBuildError> {
        let bytes = self.bytes()?;
        // The error's detail may quote a line of the key: never show it.
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| match error {
            pem::Error::NoItemsFound => self.error(
                "holds no unencrypted PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC \
                 PRIVATE KEY)",
            ),
            _ => self.error("not a valid PEM private key"),
        })
    }
}

/// `client_auth_type`: whether a client certificate is asked for, required,
/// and checked against the client CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            // `RequireClientCert` is the toolkit's old spelling.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            ClientAuth::NoClientCert => "NoClientCert",
            ClientAuth::RequestClientCert => "RequestClientCert",
            ClientAuth::RequireAnyClientCert => "RequireAnyClientCert",
            ClientAuth::VerifyClientCertIfGiven => "VerifyClientCertIfGiven",
            ClientAuth::RequireAndVerifyClientCert => "RequireAndVerifyClientCert",
        }
    }

    /// Checks a client certificate against the client CA.
    pub(crate) fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }

    /// Refuses a client without a certificate.
    pub(crate) fn requires_certificate(self) -> bool {
        matches!(
            self,
            ClientAuth::RequireAnyClientCert | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

/// `min_version`..=`max_version`, as 12 or 13.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TlsVersions {
    pub(crate) min: u8,
    pub(crate) max: u8,
}

/// The TLS 1.2 suites the rustls *ring* provider has, by the names Go (and so
/// the exporter-toolkit) gives them.
fn known_tls12_suites() -> [(&'static str, SupportedCipherSuite); 6] {
    use rustls::crypto::ring::cipher_suite as suite;
    [
        (
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ]
}

/// TLS 1.3 suites by their Go names: accepted in `cipher_suites`, and, as in
/// Go, always enabled whatever the list says.
const TLS13_SUITE_NAMES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// `cipher_suites` → the TLS 1.2 suites to offer, in the listed order.
pub(crate) fn tls12_suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, String> {
    let known = known_tls12_suites();
    let mut suites = Vec::new();
    for name in names {
        if let Some((_, suite)) = known.iter().find(|(known, _)| known == name) {
            if !suites.contains(suite) {
                suites.push(*suite);
            }
        } else if !TLS13_SUITE_NAMES.contains(&name.as_str()) {
            let supported: Vec<&str> = known
                .iter()
                .map(|(n, _)| *n)
                .chain(TLS13_SUITE_NAMES)
                .collect();
            return Err(format!(
                "tls_server_config.cipher_suites: {name:?} is not supported by mqtt-pulse's TLS \
                 library (rustls); supported: {}",
                supported.join(", ")
            ));
        }
    }
    Ok(suites)
}

/// `curve_preferences` → key-exchange groups, in the listed order.
pub(crate) fn kx_groups(names: &[String]) -> Result<Vec<&'static dyn SupportedKxGroup>, String> {
    use rustls::crypto::ring::kx_group;
    let mut groups: Vec<&'static dyn SupportedKxGroup> = Vec::new();
    for name in names {
        let group: &'static dyn SupportedKxGroup = match name.as_str() {
            "X25519" => kx_group::X25519,
            "CurveP256" => kx_group::SECP256R1,
            "CurveP384" => kx_group::SECP384R1,
            other => {
                return Err(format!(
                    "tls_server_config.curve_preferences: {other:?} is not supported by \
                     mqtt-pulse's TLS library (rustls); supported: X25519, CurveP256, CurveP384"
                ));
            }
        };
        if !groups.iter().any(|g| g.name() == group.name()) {
            groups.push(group);
        }
    }
    if groups.is_empty() {
        return Err(
            "tls_server_config.curve_preferences is empty: list curves or remove the key".into(),
        );
    }
    Ok(groups)
}

/// A checked `tls_server_config`, able to (re)build the rustls config.
pub(crate) struct TlsSettings {
    pub(crate) cert: PemSource,
    pub(crate) key: PemSource,
    pub(crate) client_ca: Option<PemSource>,
    pub(crate) client_auth: ClientAuth,
    pub(crate) allowed_sans: Option<Vec<String>>,
    pub(crate) versions: TlsVersions,
    /// `None`: every TLS 1.2 suite of the provider.
    pub(crate) tls12_suites: Option<Vec<SupportedCipherSuite>>,
    pub(crate) cipher_suites_at: At,
    /// `None`: the provider's default groups.
    pub(crate) kx_groups: Option<Vec<&'static dyn SupportedKxGroup>>,
    pub(crate) prefer_server_cipher_suites: bool,
    pub(crate) http2: bool,
    /// The web config file, for log lines.
    pub(crate) web_config: PathBuf,
}

/// Why the rustls config cannot be built; `message` names the key and file.
#[derive(Debug)]
pub(crate) struct TlsBuildError {
    pub(crate) at: At,
    pub(crate) message: String,
}

impl fmt::Display for TlsBuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl TlsSettings {
    fn provider(&self) -> CryptoProvider {
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(tls12) = &self.tls12_suites {
            provider
                .cipher_suites
                .retain(|suite| suite.tls13().is_some());
            provider.cipher_suites.extend(tls12.iter().copied());
        }
        if let Some(groups) = &self.kx_groups {
            provider.kx_groups.clone_from(groups);
        }
        provider
    }

    fn versions(&self) -> Vec<&'static SupportedProtocolVersion> {
        let TlsVersions { min, max } = self.versions;
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(version, _)| (min..=max).contains(version))
            .map(|(_, version)| version)
            .collect()
    }

    /// Reads every file and builds the config. Blocking.
    fn server_config(&self) -> Result<ServerConfig, TlsBuildError> {
        let provider = Arc::new(self.provider());
        let certificates = self.cert.certificates()?;
        let key = self.key.private_key()?;
        let verifier = self.client_verifier(&provider)?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&self.versions())
            .map_err(|error| TlsBuildError {
                at: self.cipher_suites_at,
                message: format!(
                    "tls_server_config: no cipher suite is left for the allowed TLS versions \
                     (check cipher_suites, min_version and max_version): {error}"
                ),
            })?;
        let mut config = builder
            .with_client_cert_verifier(verifier)
            .with_single_cert(certificates, key)
            .map_err(|error| match error {
                rustls::Error::InconsistentKeys(_) => self.key.error(format_args!(
                    "the private key does not belong to the certificate in {}",
                    self.cert.describe()
                )),
                other => self.key.error(format_args!("cannot use the key: {other}")),
            })?;
        config.ignore_client_order = self.prefer_server_cipher_suites;
        config.alpn_protocols = if self.http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(config)
    }

    fn client_verifier(
        &self,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<dyn ClientCertVerifier>, TlsBuildError> {
        let mut roots = RootCertStore::empty();
        if let Some(ca) = &self.client_ca {
            for certificate in ca.certificates()? {
                roots.add(certificate).map_err(|error| {
                    ca.error(format_args!("not a usable CA certificate: {error}"))
                })?;
            }
        }
        let any = |mandatory| -> Arc<dyn ClientCertVerifier> {
            Arc::new(AnyClientCertificate {
                mandatory,
                hints: roots.subjects(),
                algorithms: provider.signature_verification_algorithms,
            })
        };
        let verifier = match self.client_auth {
            ClientAuth::NoClientCert => return Ok(WebPkiClientVerifier::no_client_auth()),
            ClientAuth::RequestClientCert => any(false),
            ClientAuth::RequireAnyClientCert => any(true),
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
                let builder = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots.clone()),
                    Arc::clone(provider),
                );
                let builder = if self.client_auth == ClientAuth::VerifyClientCertIfGiven {
                    builder.allow_unauthenticated()
                } else {
                    builder
                };
                builder.build().map_err(|error| {
                    let ca = self.client_ca.as_ref().unwrap_or(&self.cert);
                    ca.error(format_args!(
                        "cannot verify client certificates with it: {error}"
                    ))
                })?
            }
        };
        Ok(match &self.allowed_sans {
            Some(allowed) => Arc::new(AllowedSans {
                inner: verifier,
                allowed: allowed.clone(),
            }),
            None => verifier,
        })
    }

    /// The followed files' contents now; `None` for one that cannot be read.
    /// Blocking.
    fn snapshot(&self) -> Snapshot {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(PemSource::path)
            .map(|path| std::fs::read(path).ok())
            .collect()
    }

    fn follows_files(&self) -> bool {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .any(|source| source.path().is_some())
    }
}

/// The bytes of the followed files, in a fixed order. Held only to be
/// compared; never shown (`TlsServer`'s `Debug` leaves it out).
type Snapshot = Vec<Option<Vec<u8>>>;

/// The TLS side of a web config while serving: the current rustls config,
/// the settings it was built from and what their files looked like then.
pub(crate) struct TlsServer {
    rustls: RustlsConfig,
    /// Locked while a connection checks the files, or a reload replaces it.
    loaded: tokio::sync::Mutex<Loaded>,
}

#[derive(Clone)]
struct Loaded {
    settings: Arc<TlsSettings>,
    files: Snapshot,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the settings: reading them would mean waiting for the lock.
        f.debug_struct("TlsServer").finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Reads the files and builds the first config. Blocking.
    pub(crate) fn new(settings: TlsSettings) -> Result<Self, TlsBuildError> {
        // What the files held, then the config from them: a change made in
        // between is built again on the next connection, never missed.
        let files = settings.snapshot();
        let config = settings.server_config()?;
        Ok(TlsServer {
            rustls: RustlsConfig::from_config(Arc::new(config)),
            loaded: tokio::sync::Mutex::new(Loaded {
                settings: Arc::new(settings),
                files,
            }),
        })
    }

    /// The acceptor for a listener: TLS with this config, reloading it before
    /// a handshake when the files changed, and at most `handshake_timeout`
    /// for the handshake.
    pub(crate) fn acceptor(
        self: &Arc<Self>,
        handshake_timeout: Duration,
    ) -> RustlsAcceptor<RefreshCertificates> {
        RustlsAcceptor::new(self.rustls.clone())
            .handshake_timeout(handshake_timeout)
            .acceptor(RefreshCertificates {
                tls: Arc::clone(self),
            })
    }

    /// Serves `newer`'s settings and certificate from the next connection on.
    pub(crate) async fn replace_with(&self, newer: &TlsServer) {
        let mut loaded = self.loaded.lock().await;
        // `newer` is not serving, so nothing else holds its lock.
        *loaded = newer.loaded.lock().await.clone();
        self.rustls.reload_from_config(newer.rustls.get_inner());
    }

    /// Reloads the config if a followed file changed since it was loaded.
    async fn refresh(&self) {
        // One check at a time: a burst of connections does not start a burst
        // of reloads.
        let mut loaded = self.loaded.lock().await;
        if !loaded.settings.follows_files() {
            return;
        }
        let settings = Arc::clone(&loaded.settings);
        let previous = loaded.files.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let now = settings.snapshot();
            if now == previous {
                return (now, None);
            }
            let config = settings.server_config();
            (now, Some(config))
        })
        .await;
        let web_config = loaded.settings.web_config.display().to_string();
        match checked {
            Ok((_, None)) => {}
            Ok((now, Some(Ok(config)))) => {
                self.rustls.reload_from_config(Arc::new(config));
                loaded.files = now;
                tracing::info!(%web_config, "TLS files changed; serving the new certificate");
            }
            Ok((now, Some(Err(error)))) => {
                // Not retried until the files change again.
                loaded.files = now;
                tracing::warn!(
                    %web_config,
                    %error,
                    "TLS files changed but cannot be loaded; still serving the previous certificate"
                );
            }
            Err(error) => tracing::warn!(%web_config, %error, "checking the TLS files failed"),
        }
    }
}

/// The inner acceptor: runs before the TLS handshake, so a renewed
/// certificate is used by the connection that noticed it.
#[derive(Clone)]
pub(crate) struct RefreshCertificates {
    tls: Arc<TlsServer>,
}

impl<I, S> Accept<I, S> for RefreshCertificates
where
    I: Send + 'static,
    S: Send + 'static,
{
    type Stream = I;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(I, S)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let tls = Arc::clone(&self.tls);
        Box::pin(async move {
            tls.refresh().await;
            Ok((stream, service))
        })
    }
}

// ---------------------------------------------------------------------------------
// Client certificate policies
// ---------------------------------------------------------------------------------

/// `RequestClientCert` / `RequireAnyClientCert`: takes any certificate the
/// client proves it holds the key of, without checking who issued it (the
/// exporter-toolkit's documented, insecure meaning of those two).
#[derive(Debug)]
struct AnyClientCertificate {
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `client_allowed_sans`: after `inner` accepted the certificate, one of its
/// subject alternative names (DNS, e-mail, IP or URI) must be in the list.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = subject_alt_names(end_entity.as_ref()).unwrap_or_default();
        if names.iter().any(|name| self.allowed.contains(name)) {
            Ok(verified)
        } else {
            tracing::debug!(
                sans = ?names,
                "client certificate refused: none of its SANs is in client_allowed_sans"
            );
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

// ---------------------------------------------------------------------------------
// Subject alternative names, read from DER
// ---------------------------------------------------------------------------------

const SEQUENCE: u8 = 0x30;
const OCTET_STRING: u8 = 0x04;
const BOOLEAN: u8 = 0x01;
const OBJECT_IDENTIFIER: u8 = 0x06;
/// `[3] EXPLICIT` in a TBSCertificate: the extensions.
const EXTENSIONS: u8 = 0xa3;
/// id-ce-subjectAltName, 2.5.29.17.
const SUBJECT_ALT_NAME: [u8; 3] = [0x55, 0x1d, 0x11];

/// One DER element: `(tag, content, rest of the input)`. Only low tag numbers
/// and definite lengths of up to four bytes, which is all a certificate's
/// outer structure uses.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(count)?;
        rest = after;
        bytes
            .iter()
            .fold(0usize, |length, &byte| (length << 8) | usize::from(byte))
    };
    let (content, rest) = rest.split_at_checked(length)?;
    Some((tag, content, rest))
}

/// The DNS names, e-mail addresses, IP addresses and URIs of a DER
/// certificate's subject alternative names, spelled as Go's crypto/x509 (and
/// so the exporter-toolkit's `client_allowed_sans`) compares them. `None` if
/// the certificate cannot be read.
pub(crate) fn subject_alt_names(certificate: &[u8]) -> Option<Vec<String>> {
    let (SEQUENCE, certificate, _) = der_element(certificate)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = der_element(certificate)? else {
        return None;
    };
    while !tbs.is_empty() {
        let (tag, content, rest) = der_element(tbs)?;
        tbs = rest;
        if tag != EXTENSIONS {
            continue;
        }
        let (SEQUENCE, mut extensions, _) = der_element(content)? else {
            return None;
        };
        while !extensions.is_empty() {
            let (SEQUENCE, extension, rest) = der_element(extensions)? else {
                return None;
            };
            extensions = rest;
            let (OBJECT_IDENTIFIER, oid, mut value) = der_element(extension)? else {
                return None;
            };
            if oid != SUBJECT_ALT_NAME {
                continue;
            }
            let (mut tag, mut content, rest) = der_element(value)?;
            if tag == BOOLEAN {
                value = rest;
                (tag, content, _) = der_element(value)?;
            }
            if tag != OCTET_STRING {
                return None;
            }
            return general_names(content);
        }
        return Some(Vec::new());
    }
    Some(Vec::new())
}

fn general_names(der: &[u8]) -> Option<Vec<String>> {
    let (SEQUENCE, mut names, _) = der_element(der)? else {
        return None;
    };
    let mut out = Vec::new();
    while !names.is_empty() {
        let (tag, content, rest) = der_element(names)?;
        names = rest;
        match tag {
            // [1] rfc822Name, [2] dNSName, [6] uniformResourceIdentifier: IA5String.
            0x81 | 0x82 | 0x86 => out.push(std::str::from_utf8(content).ok()?.to_owned()),
            // [7] iPAddress
            0x87 => out.push(match content.len() {
                4 => Ipv4Addr::from(<[u8; 4]>::try_from(content).ok()?).to_string(),
                16 => {
                    let address = Ipv6Addr::from(<[u8; 16]>::try_from(content).ok()?);
                    // Go prints an IPv4-mapped address as IPv4.
                    match address.to_ipv4_mapped() {
                        Some(v4) => v4.to_string(),
                        None => address.to_string(),
                    }
                }
                _ => return None,
            }),
            _ => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn certificate(sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn subject_alt_names_are_read_as_go_spells_them() {
        let der = certificate(vec![
            SanType::DnsName("prometheus.example".try_into().unwrap()),
            SanType::Rfc822Name("ops@example.org".try_into().unwrap()),
            SanType::IpAddress("192.0.2.7".parse().unwrap()),
            SanType::IpAddress("2001:db8::1".parse().unwrap()),
            SanType::IpAddress("::ffff:198.51.100.1".parse().unwrap()),
            SanType::URI("spiffe://example.org/prometheus".try_into().unwrap()),
        ]);
        assert_eq!(
            subject_alt_names(&der).unwrap(),
            [
                "prometheus.example",
                "ops@example.org",
                "192.0.2.7",
                "2001:db8::1",
                "198.51.100.1",
                "spiffe://example.org/prometheus",
            ]
        );
    }

    #[test]
    fn a_certificate_without_the_extension_has_no_names_and_garbage_has_none_at_all() {
        assert_eq!(subject_alt_names(&certificate(vec![])), Some(vec![]));
        let der = certificate(vec![SanType::DnsName("a.example".try_into().unwrap())]);
        assert_eq!(subject_alt_names(&der[..der.len() / 2]), None);
        assert_eq!(subject_alt_names(b"not DER"), None);
        assert_eq!(subject_alt_names(&[]), None);
    }

    #[test]
    fn cipher_suites_and_curves_map_go_names_and_refuse_the_rest() {
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let suites = tls12_suites(&names(&[
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        ]))
        .unwrap();
        assert_eq!(
            suites,
            [rustls::crypto::ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]
        );
        let error = tls12_suites(&names(&["TLS_RSA_WITH_AES_128_CBC_SHA"])).unwrap_err();
        assert!(
            error.contains("\"TLS_RSA_WITH_AES_128_CBC_SHA\" is not supported"),
            "{error}"
        );

        let groups = kx_groups(&names(&["CurveP384", "X25519"])).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].name(), rustls::NamedGroup::secp384r1);
        assert!(
            kx_groups(&names(&["CurveP521"]))
                .unwrap_err()
                .contains("CurveP521")
        );
        assert!(kx_groups(&[]).is_err());
    }
}
