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

/// A test CA kept in memory, which issues server chains with chosen expiry
/// dates: for tests of the certificate-expiry metric, which need to know each
/// certificate's `notAfter` and to rotate the broker's certificate under the
/// same CA. The root itself is valid 2020-01-01 to 2100-01-01.
pub struct TestCa {
    /// The root certificate, what a client trusts (`ca_file`).
    pub ca_pem_path: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A calendar date (UTC midnight) for [`TestCa::issue_server`].
pub type Ymd = (i32, u8, u8);

impl TestCa {
    /// Makes a root CA and writes it to `dir/{name}-ca.pem`.
    pub fn generate(dir: impl AsRef<Path>, name: &str) -> TestCa {
        use rcgen::{CertificateParams, KeyPair};
        let dir = dir.as_ref();
        fs::create_dir_all(dir).expect("create pki dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params(
            &mut params,
            (2100, 1, 1),
            format!("mqtt-pulse test root {name} {:08x}", random_u64() as u32),
        );
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("self-sign ca");
        let ca_pem_path = dir.join(format!("{name}-ca.pem"));
        fs::write(&ca_pem_path, cert.pem()).expect("write ca.pem");
        TestCa {
            ca_pem_path,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// Issues a server certificate for "localhost" and 127.0.0.1 that
    /// expires at `leaf_not_after`, signed by an intermediate CA that
    /// expires at `intermediate_not_after` (signed by the root) or, with
    /// `None`, by the root directly. Writes the chain the broker presents
    /// (leaf, then the intermediate) and the key over `{name}-server.pem`
    /// and `{name}-server.key` in `dir`: issuing again under the same name
    /// rotates the files a broker started with them reads at its restart.
    pub fn issue_server(
        &self,
        dir: impl AsRef<Path>,
        name: &str,
        leaf_not_after: Ymd,
        intermediate_not_after: Option<Ymd>,
    ) -> TlsFiles {
        use rcgen::{
            CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
            date_time_ymd,
        };
        let dir = dir.as_ref();
        let mut chain = String::new();
        let intermediate = intermediate_not_after.map(|not_after| {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            ca_params(
                &mut params,
                not_after,
                format!("mqtt-pulse test intermediate {name}"),
            );
            params.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate().expect("intermediate key");
            let cert = params
                .signed_by(&key, &self.issuer)
                .expect("sign intermediate");
            (cert.pem(), rcgen::Issuer::new(params, key))
        });
        let issuer = intermediate.as_ref().map_or(&self.issuer, |(_, i)| i);

        let sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = date_time_ymd(2020, 1, 1);
        let (y, m, d) = leaf_not_after;
        params.not_after = date_time_ymd(y, m, d);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, issuer).expect("sign leaf");
        chain.push_str(&cert.pem());
        if let Some((pem, _)) = &intermediate {
            chain.push_str(pem);
        }

        let files = TlsFiles {
            ca: self.ca_pem_path.clone(),
            cert: dir.join(format!("{name}-server.pem")),
            key: dir.join(format!("{name}-server.key")),
        };
        fs::write(&files.cert, chain).expect("write server chain");
        fs::write(&files.key, key.serialize_pem()).expect("write server key");
        files
    }
}

/// A CA's parameters: valid from 2020-01-01 to `not_after`, named `cn`.
fn ca_params(params: &mut rcgen::CertificateParams, not_after: Ymd, cn: String) {
    use rcgen::{BasicConstraints, DnType, IsCa, KeyUsagePurpose, date_time_ymd};
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = date_time_ymd(2020, 1, 1);
    let (y, m, d) = not_after;
    params.not_after = date_time_ymd(y, m, d);
}
