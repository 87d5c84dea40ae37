//! A checked `tls_server_config` and the rustls `ServerConfig` built from it:
//! where the PEM items come from, the TLS versions, cipher suites and curves.
//!
//! It owns reading the PEM files and building the config. It must never put
//! key material in an error (PEM parse errors can quote a line of the file,
//! so they are reported without detail).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};

use crate::http::web::error::At;

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

    pub(super) fn path(&self) -> Option<&Path> {
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

    pub(super) fn error(&self, problem: impl fmt::Display) -> TlsBuildError {
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

    pub(super) fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsBuildError> {
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
    pub(crate) client_auth: ClientAuthType,
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
    pub(super) fn server_config(&self) -> Result<ServerConfig, TlsBuildError> {
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

    /// The followed files' contents now; `None` for one that cannot be read.
    /// Blocking.
    pub(super) fn file_contents(&self) -> FileContents {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(PemSource::path)
            .map(|path| std::fs::read(path).ok())
            .collect()
    }

    pub(super) fn follows_files(&self) -> bool {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .any(|source| source.path().is_some())
    }
}

/// The bytes of the followed files, in a fixed order. Held only to be
/// compared; never shown (`TlsServer`'s `Debug` leaves it out).
pub(super) type FileContents = Vec<Option<Vec<u8>>>;

/// `client_auth_type`: whether a client certificate is asked for, required,
/// and checked against the client CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientAuthType {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuthType {
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "NoClientCert" => ClientAuthType::NoClientCert,
            "RequestClientCert" => ClientAuthType::RequestClientCert,
            // `RequireClientCert` is the toolkit's old spelling.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuthType::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuthType::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuthType::RequireAndVerifyClientCert,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            ClientAuthType::NoClientCert => "NoClientCert",
            ClientAuthType::RequestClientCert => "RequestClientCert",
            ClientAuthType::RequireAnyClientCert => "RequireAnyClientCert",
            ClientAuthType::VerifyClientCertIfGiven => "VerifyClientCertIfGiven",
            ClientAuthType::RequireAndVerifyClientCert => "RequireAndVerifyClientCert",
        }
    }

    /// Checks a client certificate against the client CA.
    pub(crate) fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuthType::VerifyClientCertIfGiven | ClientAuthType::RequireAndVerifyClientCert
        )
    }

    /// Refuses a client without a certificate.
    pub(crate) fn requires_certificate(self) -> bool {
        matches!(
            self,
            ClientAuthType::RequireAnyClientCert | ClientAuthType::RequireAndVerifyClientCert
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
