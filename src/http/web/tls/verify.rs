//! Client-certificate policies (`client_auth_type`, `client_allowed_sans`)
//! as rustls verifiers, and the subject alternative names they compare.
//!
//! It owns what a client must present. `RequestClientCert` and
//! `RequireAnyClientCert` take any certificate the client holds the key of,
//! as in Go: only `RequireAndVerifyClientCert` authenticates clients.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

use super::settings::{ClientAuthType, TlsBuildError, TlsSettings};

impl TlsSettings {
    /// The verifier for `client_auth_type`, `client_ca` and
    /// `client_allowed_sans`. Reads the client CA: blocking.
    pub(super) fn client_verifier(
        &self,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<dyn ClientCertVerifier>, TlsBuildError> {
        if self.client_auth == ClientAuthType::NoClientCert {
            return Ok(WebPkiClientVerifier::no_client_auth());
        }
        let mut roots = RootCertStore::empty();
        if let Some(ca) = &self.client_ca {
            for certificate in ca.certificates()? {
                roots.add(certificate).map_err(|error| {
                    ca.error(format_args!("not a usable CA certificate: {error}"))
                })?;
            }
        }
        let chain = if self.client_auth.verifies() {
            let builder = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots.clone()),
                Arc::clone(provider),
            );
            let builder = if self.client_auth.requires_certificate() {
                builder
            } else {
                builder.allow_unauthenticated()
            };
            Some(builder.build().map_err(|error| {
                let ca = self.client_ca.as_ref().unwrap_or(&self.cert);
                ca.error(format_args!(
                    "cannot verify client certificates with it: {error}"
                ))
            })?)
        } else {
            None
        };
        Ok(Arc::new(ClientCertificatePolicy {
            chain,
            mandatory: self.client_auth.requires_certificate(),
            hints: roots.subjects(),
            algorithms: provider.signature_verification_algorithms,
            allowed_sans: self.allowed_sans.clone(),
        }))
    }
}

/// Every `client_auth_type` but `NoClientCert`: asks for a certificate,
/// insists on one when `mandatory`, checks its chain against the client CA
/// when there is a `chain` verifier (else takes any certificate the client
/// proves it holds the key of — the exporter-toolkit's documented, insecure
/// meaning of `RequestClientCert` and `RequireAnyClientCert`), then, with
/// `client_allowed_sans`, wants one of its subject alternative names (DNS,
/// e-mail, IP or URI) in the list.
#[derive(Debug)]
struct ClientCertificatePolicy {
    /// webpki's verifier with the client CA as roots.
    chain: Option<Arc<dyn ClientCertVerifier>>,
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
    allowed_sans: Option<Vec<String>>,
}

impl ClientCertVerifier for ClientCertificatePolicy {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = match &self.chain {
            Some(chain) => chain.verify_client_cert(end_entity, intermediates, now)?,
            None => ClientCertVerified::assertion(),
        };
        let Some(allowed) = &self.allowed_sans else {
            return Ok(verified);
        };
        let names = subject_alt_names(end_entity.as_ref()).unwrap_or_default();
        if names.iter().any(|name| allowed.contains(name)) {
            return Ok(verified);
        }
        tracing::debug!(
            sans = ?names,
            "client certificate refused: none of its SANs is in client_allowed_sans"
        );
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
    }

    // The handshake signatures are checked the same way webpki's verifier
    // checks them: with the provider's algorithms.
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

/// The DNS names, e-mail addresses, IP addresses and URIs of a DER
/// certificate's subject alternative names, spelled as Go's crypto/x509 (and
/// so the exporter-toolkit's `client_allowed_sans`) compares them. `None` if
/// the certificate cannot be read.
pub(crate) fn subject_alt_names(certificate: &[u8]) -> Option<Vec<String>> {
    let (_, certificate) = X509Certificate::from_der(certificate).ok()?;
    let Some(extension) = certificate.subject_alternative_name().ok()? else {
        return Some(Vec::new());
    };
    extension
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::RFC822Name(text) | GeneralName::DNSName(text) | GeneralName::URI(text) => {
                Some(Some((*text).to_owned()))
            }
            GeneralName::IPAddress(bytes) => Some(ip_address(bytes)),
            _ => None,
        })
        .collect()
}

/// An iPAddress SAN as Go prints it: an IPv4-mapped IPv6 address as IPv4.
fn ip_address(bytes: &[u8]) -> Option<String> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(Ipv4Addr::from(v4).to_string());
    }
    let address = Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
    Some(match address.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => address.to_string(),
    })
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
}
