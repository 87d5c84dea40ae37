//! The rustls client configuration of `mqtts://` and `wss://` connections.
//!
//! Built here rather than by rumqttc because rumqttc's default loads the
//! system roots with `expect`: a bad file must become an error naming it, never
//! a panic.
//!
//! # Which crypto provider
//!
//! mqtt-pulse never changes how its host's TLS behaves: without its `ring`
//! feature it compiles no rustls crypto provider and installs none. Its own
//! connections use the process-level default,
//! [`CryptoProvider::get_default`](rustls::crypto::CryptoProvider::get_default):
//! the one the host installed, or the one rustls installed from its crate
//! features the first time the host built a TLS config. With the `ring`
//! feature (on in the daemon), ring is used when no default is installed —
//! for mqtt-pulse's connections only; nothing is installed. Without either,
//! starting a TLS connection fails with [`OptionsError::NoCryptoProvider`].
//!
//! Its files are read through [`files`](super::files) (regular files only,
//! size-capped) each time a configuration is built: at start and at every
//! connect attempt, so a rotated CA, certificate or key is used from the next
//! attempt on.
//!
//! A verified broker chain's expiry is recorded by the verifier of
//! [`expiry`](super::expiry), which wraps rustls's WebPKI verifier; every
//! connect is a full handshake (no session resumption), so it is read again
//! at each one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateDer as Der, PrivateKeyDer};
use rustls::{ClientConfig, DigitallySignedStruct as Dss, RootCertStore};

use super::OptionsError;
use super::expiry::{ChainExpiry, RecordingVerifier};
use super::files::{self, FileKind};

/// TLS settings of a connection. With no CA file, the system's roots are trusted.
///
/// The crypto provider is the process's default
/// ([`CryptoProvider::get_default`](rustls::crypto::CryptoProvider::get_default)),
/// so a host's TLS and mqtt-pulse's use the same one. A host that uses rustls
/// installs it once at startup, as rustls recommends — with the provider its
/// own crates chose, e.g.
/// `rustls::crypto::aws_lc_rs::default_provider().install_default()` for
/// rumqttc's default features.
///
/// Without an installed default (and without mqtt-pulse's `ring` feature, which
/// falls back to ring), starting a `mqtts://` or `wss://` connection fails
/// with [`OptionsError::NoCryptoProvider`], never a panic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CA certificates to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM files of a client certificate (chain) and its private key, for
    /// mutual TLS.
    pub client_certificate: Option<ClientCertificate>,
    /// Accept any server certificate (signatures are still checked). For test
    /// brokers only: it gives up protection against an impostor broker.
    pub insecure_skip_verify: bool,
}

/// A client certificate and key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl TlsOptions {
    /// Whether anything differs from the defaults.
    pub(crate) fn is_default(&self) -> bool {
        *self == TlsOptions::default()
    }

    /// Whether building the configuration reads files of ours (a CA file or
    /// a client certificate and key).
    pub(crate) fn names_files(&self) -> bool {
        self.ca_file.is_some() || self.client_certificate.is_some()
    }

    /// The configuration, verifying nothing for `insecure_skip_verify` and
    /// otherwise recording nothing: for a one-off connection that exports no
    /// certificate expiry (the healthcheck).
    #[cfg_attr(not(feature = "daemon"), allow(dead_code))]
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>, OptionsError> {
        self.client_config_recording(&ChainExpiry::default())
    }

    /// The configuration of a monitored connection: a verified chain's
    /// earliest `notAfter` goes to `expiry` at each handshake (never with
    /// `insecure_skip_verify`, which verifies no chain).
    ///
    /// Sessions are never resumed: a resumed session skips the certificate,
    /// so the expiry could not be refreshed at each connect, and a monitor's
    /// reconnect should meet the broker as a new client does.
    pub(crate) fn client_config_recording(
        &self,
        expiry: &ChainExpiry,
    ) -> Result<Arc<ClientConfig>, OptionsError> {
        let roots = match &self.ca_file {
            _ if self.insecure_skip_verify => RootCertStore::empty(),
            Some(path) => roots_from_file(path)?,
            None => system_roots()?,
        };
        let provider = crypto_provider()?;
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(OptionsError::Tls)?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)))
        } else {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| OptionsError::Tls(rustls::Error::General(e.to_string())))?;
            let verifier = RecordingVerifier::new(webpki, expiry.clone());
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        };
        let mut config = match &self.client_certificate {
            None => builder.with_no_client_auth(),
            Some(certificate) => {
                let chain = certificates(&certificate.cert_file)?;
                let key_error = |reason: String| OptionsError::Pem {
                    what: "client key",
                    path: certificate.key_file.clone(),
                    reason,
                };
                let pem = files::read(&certificate.key_file, FileKind::Pem)
                    .map_err(|e| key_error(e.to_string()))?;
                let key =
                    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| key_error(e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(OptionsError::Tls)?
            }
        };
        config.resumption = Resumption::disabled();
        Ok(Arc::new(config))
    }
}

/// The process default provider; with the `ring` feature, ring if there is none.
fn crypto_provider() -> Result<Arc<CryptoProvider>, OptionsError> {
    if let Some(provider) = CryptoProvider::get_default() {
        return Ok(Arc::clone(provider));
    }
    #[cfg(feature = "ring")]
    return Ok(Arc::new(rustls::crypto::ring::default_provider()));
    #[cfg(not(feature = "ring"))]
    Err(OptionsError::NoCryptoProvider)
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, OptionsError> {
    let pem_error = |reason: String| OptionsError::Pem {
        what: "certificate",
        path: path.to_owned(),
        reason,
    };
    let pem = files::read(path, FileKind::Pem).map_err(|e| pem_error(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no certificate in the file".into()));
    }
    Ok(certs)
}

fn roots_from_file(path: &Path) -> Result<RootCertStore, OptionsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| OptionsError::Pem {
            what: "CA certificate",
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, OptionsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let reason = match found.errors.first() {
            Some(e) => e.to_string(),
            None => "none found".to_owned(),
        };
        return Err(OptionsError::NoSystemRoots(reason));
    }
    Ok(roots)
}

/// The verifier behind `insecure_skip_verify`: any certificate chain is
/// accepted, but the handshake signatures are still verified, so the session is
/// at least bound to the key the server presented.
#[derive(Debug)]
struct AnyServerCertificate(Arc<CryptoProvider>);

/// The answer to a handshake signature check.
type SignatureCheck = Result<HandshakeSignatureValid, rustls::Error>;

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, msg: &[u8], cert: &Der<'_>, dss: &Dss) -> SignatureCheck {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(msg, cert, dss, algorithms)
    }

    fn verify_tls13_signature(&self, msg: &[u8], cert: &Der<'_>, dss: &Dss) -> SignatureCheck {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(msg, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
