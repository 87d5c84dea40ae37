//! A rustls client for the TLS tests: [`TlsClient`] sends a raw request (see
//! `support::http`) over a fresh TLS connection and reports what was
//! negotiated.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ProtocolVersion, SupportedProtocolVersion};

use crate::support::http::{Response, connect, exchange, request};

pub(crate) fn get(path: &str) -> Vec<u8> {
    request("GET", path, &[])
}

/// A TLS client: trusts `ca`, presents `identity` if given, speaks `versions`,
/// offers `alpn`.
pub(crate) struct TlsClient {
    pub(crate) config: Arc<ClientConfig>,
}

impl TlsClient {
    pub(crate) fn new(ca: &Path) -> Self {
        Self::build(ca, None, rustls::DEFAULT_VERSIONS, &[])
    }

    pub(crate) fn with_identity(ca: &Path, cert: &Path, key: &Path) -> Self {
        Self::build(ca, Some((cert, key)), rustls::DEFAULT_VERSIONS, &[])
    }

    pub(crate) fn build(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Self {
        Self::build_with(
            rustls::crypto::ring::default_provider(),
            ca,
            identity,
            versions,
            alpn,
        )
    }

    /// A client without identity that offers only what `provider` has (its
    /// cipher suites and key-exchange groups, in its order).
    pub(crate) fn with_provider(
        provider: CryptoProvider,
        ca: &Path,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Self {
        Self::build_with(provider, ca, None, versions, &[])
    }

    fn build_with(
        provider: CryptoProvider,
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_file_iter(cert)
                        .unwrap()
                        .map(Result::unwrap)
                        .collect(),
                    PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsClient {
            config: Arc::new(config),
        }
    }

    pub(crate) fn connection(&self) -> ClientConnection {
        ClientConnection::new(
            Arc::clone(&self.config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap()
    }

    /// One request over a fresh connection.
    pub(crate) fn exchange(&self, port: u16, request: &[u8]) -> io::Result<Tls> {
        let mut stream = rustls::StreamOwned::new(self.connection(), connect(port)?);
        let response = exchange(&mut stream, request)?;
        Ok(Tls {
            response,
            version: stream.conn.protocol_version(),
            server_cert: stream
                .conn
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|cert| cert.to_vec())
                .unwrap_or_default(),
        })
    }

    /// Only the handshake, for what it negotiated.
    pub(crate) fn handshake(&self, port: u16) -> io::Result<ClientConnection> {
        let mut tcp = connect(port)?;
        let mut connection = self.connection();
        while connection.is_handshaking() {
            connection.complete_io(&mut tcp)?;
        }
        Ok(connection)
    }
}

#[derive(Debug)]
pub(crate) struct Tls {
    pub(crate) response: Response,
    pub(crate) version: Option<ProtocolVersion>,
    pub(crate) server_cert: Vec<u8>,
}

pub(crate) fn der(pem_file: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(pem_file).unwrap().to_vec()
}
