//! [`TestPki`]: a throw-away CA with server and client certificates, as PEM files.

use std::fs;
use std::path::{Path, PathBuf};

use super::broker::TlsFiles;
use super::random_u64;

/// A test CA with a server certificate (SANs "localhost" and 127.0.0.1, serverAuth), a
/// client certificate (CN and SAN "mqtt-pulse-test-client", clientAuth) and a second
/// client certificate from the same CA under another name ([`OTHER_CLIENT_CN`]), as PEM
/// files. Each
/// generation makes fresh keys, so two `TestPki`s are unrelated: use a second one for
/// "CA mismatch" tests.
#[derive(Clone, Debug)]
pub struct TestPki {
    pub ca_pem_path: PathBuf,
    pub ca_key_path: PathBuf,
    pub server_cert_path: PathBuf,
    pub server_key_path: PathBuf,
    pub client_cert_path: PathBuf,
    pub client_key_path: PathBuf,
    /// Signed by the same CA as the client certificate, for [`OTHER_CLIENT_CN`]: a
    /// client the CA vouches for whose name a server may still refuse.
    pub other_client_cert_path: PathBuf,
    pub other_client_key_path: PathBuf,
}

/// Common name of the client certificate.
pub const TEST_CLIENT_CN: &str = "mqtt-pulse-test-client";

/// Common name (and only SAN) of the second client certificate.
pub const OTHER_CLIENT_CN: &str = "mqtt-pulse-other-client";

impl TestPki {
    /// Writes ca.pem, ca.key, server.pem, server.key, client.pem, client.key,
    /// other-client.pem, other-client.key into `dir`
    /// (overwriting an earlier set there).
    pub fn generate(dir: impl AsRef<Path>) -> TestPki {
        TestPki::generate_named(dir, "")
    }

    /// Like [`generate`](Self::generate) with file names prefixed by `name-`, so several
    /// unrelated sets can share one dir (e.g. `generate_named(dir, "other")`).
    pub fn generate_named(dir: impl AsRef<Path>, name: &str) -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose, date_time_ymd,
        };

        let dir = dir.as_ref();
        fs::create_dir_all(dir).expect("create pki dir");
        let prefix = if name.is_empty() {
            String::new()
        } else {
            format!("{name}-")
        };
        let path = |file: &str| dir.join(format!("{prefix}{file}"));
        let write = |file: &Path, pem: String| {
            fs::write(file, pem).unwrap_or_else(|e| panic!("write {}: {e}", file.display()))
        };

        // CA
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("mqtt-pulse test CA {name} {:08x}", random_u64() as u32),
        );
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca_params.not_before = date_time_ymd(2020, 1, 1);
        ca_params.not_after = date_time_ymd(2100, 1, 1);
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign ca");
        let pki = TestPki {
            ca_pem_path: path("ca.pem"),
            ca_key_path: path("ca.key"),
            server_cert_path: path("server.pem"),
            server_key_path: path("server.key"),
            client_cert_path: path("client.pem"),
            client_key_path: path("client.key"),
            other_client_cert_path: path("other-client.pem"),
            other_client_key_path: path("other-client.key"),
        };
        write(&pki.ca_pem_path, ca_cert.pem());
        write(&pki.ca_key_path, ca_key.serialize_pem());
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |sans: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(sans).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.use_authority_key_identifier_extension = true;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![usage];
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2100, 1, 1);
            let key = KeyPair::generate().expect("leaf key");
            let cert = params.signed_by(&key, &issuer).expect("sign leaf");
            (cert.pem(), key.serialize_pem())
        };

        let (cert, key) = leaf(
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        write(&pki.server_cert_path, cert);
        write(&pki.server_key_path, key);

        let (cert, key) = leaf(
            vec![TEST_CLIENT_CN.to_owned()],
            TEST_CLIENT_CN,
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        write(&pki.client_cert_path, cert);
        write(&pki.client_key_path, key);

        let (cert, key) = leaf(
            vec![OTHER_CLIENT_CN.to_owned()],
            OTHER_CLIENT_CN,
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        write(&pki.other_client_cert_path, cert);
        write(&pki.other_client_key_path, key);
        pki
    }

    /// What a broker needs: `Broker::builder().tls(pki.server_files())`.
    pub fn server_files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.ca_pem_path.clone(),
            cert: self.server_cert_path.clone(),
            key: self.server_key_path.clone(),
        }
    }

    /// What a client presenting a certificate needs.
    pub fn client_files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.ca_pem_path.clone(),
            cert: self.client_cert_path.clone(),
            key: self.client_key_path.clone(),
        }
    }
}
