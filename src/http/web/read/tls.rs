//! Reading `tls_server_config`: where the certificate, key and client CA come
//! from, the client-certificate policy, and the TLS versions, cipher suites
//! and curves, each checked with its position in the file.

use serde_saphyr::Spanned;

use super::{RawTls, Text, WebConfigError, WebConfigReader, at, given};
use crate::http::web::tls::{
    ClientAuthType, PemSource, TlsServer, TlsSettings, TlsVersions, kx_groups, tls12_suites,
};

/// The string values of a `tls_server_config`, with `""` read as unset.
struct Given {
    cert_file: Text,
    key_file: Text,
    cert: Text,
    key: Text,
    client_ca_file: Text,
    client_ca: Text,
    client_auth_type: Text,
    min_version: Text,
    max_version: Text,
}

impl Given {
    fn new(raw: &mut RawTls) -> Self {
        Given {
            cert_file: given(raw.cert_file.take()),
            key_file: given(raw.key_file.take()),
            cert: given(raw.cert.take()),
            // The inline key is a secret while it is parsed; from here on
            // it lives in a `PemSource`, whose `Debug` never shows it.
            key: raw.key.take().and_then(|key| {
                given(Some(Spanned {
                    value: key.value.0,
                    referenced: key.referenced,
                    defined: key.defined,
                }))
            }),
            client_ca_file: given(raw.client_ca_file.take()),
            client_ca: given(raw.client_ca.take()),
            client_auth_type: given(raw.client_auth_type.take()),
            min_version: given(raw.min_version.take()),
            max_version: given(raw.max_version.take()),
        }
    }

    /// Whether anything that makes the section serve TLS is set.
    fn asks_for_tls(&self) -> bool {
        [
            &self.cert_file,
            &self.key_file,
            &self.cert,
            &self.key,
            &self.client_ca_file,
            &self.client_ca,
            &self.client_auth_type,
        ]
        .iter()
        .any(|value| value.is_some())
    }
}

/// The two ways a PEM item can be given: the keys of its file and of its
/// inline PEM, e.g. `cert_file` and `cert`.
struct PemKeys {
    file: &'static str,
    inline: &'static str,
}

const CERT: PemKeys = PemKeys {
    file: "cert_file",
    inline: "cert",
};
const KEY: PemKeys = PemKeys {
    file: "key_file",
    inline: "key",
};
const CLIENT_CA: PemKeys = PemKeys {
    file: "client_ca_file",
    inline: "client_ca",
};

impl WebConfigReader<'_> {
    /// `Some` when the section asks for TLS; `None` when it is empty.
    pub(super) fn tls(
        &self,
        mut raw: RawTls,
        http2: bool,
    ) -> Result<Option<TlsServer>, WebConfigError> {
        let given = Given::new(&mut raw);
        if !given.asks_for_tls() {
            self.no_tuning_without_a_certificate(&given, &raw)?;
            return Ok(None);
        }
        let no_certificate_at = [
            &given.key_file,
            &given.key,
            &given.client_auth_type,
            &given.client_ca_file,
            &given.client_ca,
        ]
        .into_iter()
        .find_map(|value| value.as_ref().map(at))
        .flatten();
        let Some(cert) = self.pem_source(&CERT, given.cert_file, given.cert)? else {
            return Err(self.invalid(
                no_certificate_at,
                "tls_server_config has no certificate: set cert_file (or cert) and key_file (or key)",
            ));
        };
        let Some(key) = self.pem_source(&KEY, given.key_file, given.key)? else {
            return Err(self.invalid(
                cert.at(),
                format!(
                    "tls_server_config.{} is set but key_file (or key) is missing",
                    cert.key()
                ),
            ));
        };
        let client_ca = self.pem_source(&CLIENT_CA, given.client_ca_file, given.client_ca)?;
        let client_auth = self.client_auth(given.client_auth_type.as_ref(), client_ca.as_ref())?;
        let allowed_sans = self.allowed_sans(raw.client_allowed_sans, client_auth)?;
        let versions = self.versions(given.min_version.as_ref(), given.max_version.as_ref())?;
        let cipher_suites_at = raw.cipher_suites.as_ref().and_then(at);
        let tls12_suites = match raw.cipher_suites {
            None => None,
            Some(names) => Some(
                tls12_suites(&names.value).map_err(|message| self.invalid(at(&names), message))?,
            ),
        };
        let kx_groups = match raw.curve_preferences {
            None => None,
            Some(names) => {
                Some(kx_groups(&names.value).map_err(|message| self.invalid(at(&names), message))?)
            }
        };
        let settings = TlsSettings {
            cert,
            key,
            client_ca,
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

    /// Tuning without a certificate would be dropped without a word (the
    /// exporter-toolkit serves plain HTTP then): an error instead.
    fn no_tuning_without_a_certificate(
        &self,
        given: &Given,
        raw: &RawTls,
    ) -> Result<(), WebConfigError> {
        let tuning = [
            ("min_version", given.min_version.as_ref().map(at)),
            ("max_version", given.max_version.as_ref().map(at)),
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
        match tuning.into_iter().find_map(|(key, set)| Some((key, set?))) {
            Some((key, position)) => Err(self.invalid(
                position,
                format!(
                    "tls_server_config.{key} is set but there is no certificate: \
                     set cert_file and key_file to serve TLS, or remove {key}"
                ),
            )),
            None => Ok(()),
        }
    }

    /// A PEM item given by file or inline, not both; `None` if neither.
    fn pem_source(
        &self,
        keys: &PemKeys,
        file: Text,
        inline: Text,
    ) -> Result<Option<PemSource>, WebConfigError> {
        Ok(match (file, inline) {
            (Some(_), Some(inline)) => {
                return Err(self.invalid(
                    at(&inline),
                    format!(
                        "tls_server_config: set {} or {}, not both",
                        keys.file, keys.inline
                    ),
                ));
            }
            (Some(file), None) => Some(PemSource::File {
                key: keys.file,
                path: self.path(&file.value),
                at: at(&file),
            }),
            (None, Some(inline)) => Some(PemSource::Inline {
                key: keys.inline,
                at: at(&inline),
                pem: inline.value,
            }),
            (None, None) => None,
        })
    }

    /// `client_auth_type`, checked against whether there is a client CA.
    fn client_auth(
        &self,
        value: Option<&Spanned<String>>,
        client_ca: Option<&PemSource>,
    ) -> Result<ClientAuthType, WebConfigError> {
        let client_auth = match value {
            Some(value) => ClientAuthType::from_name(&value.value).ok_or_else(|| {
                self.invalid(
                    at(value),
                    format!(
                        "tls_server_config.client_auth_type {:?} is unknown; expected one of \
                         NoClientCert, RequestClientCert, RequireAnyClientCert, \
                         VerifyClientCertIfGiven, RequireAndVerifyClientCert",
                        value.value
                    ),
                )
            })?,
            None => ClientAuthType::NoClientCert,
        };
        if let Some(ca) = client_ca
            && client_auth == ClientAuthType::NoClientCert
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
        if client_auth.verifies() && client_ca.is_none() {
            return Err(self.invalid(
                value.and_then(at),
                format!(
                    "tls_server_config.client_auth_type {} needs client_ca_file (or client_ca) \
                     to verify client certificates with",
                    client_auth.name()
                ),
            ));
        }
        Ok(client_auth)
    }

    /// `client_allowed_sans`: only with a policy that insists on a
    /// certificate, and not empty.
    fn allowed_sans(
        &self,
        sans: Option<Spanned<Vec<String>>>,
        client_auth: ClientAuthType,
    ) -> Result<Option<Vec<String>>, WebConfigError> {
        let Some(sans) = sans else {
            return Ok(None);
        };
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
        Ok(Some(sans.value))
    }

    /// `min_version`..=`max_version`, TLS 1.2 to 1.3 when unset.
    fn versions(
        &self,
        min_version: Option<&Spanned<String>>,
        max_version: Option<&Spanned<String>>,
    ) -> Result<TlsVersions, WebConfigError> {
        let min = match min_version {
            Some(value) => self.tls_version(value, "min_version")?,
            None => 12,
        };
        let max = match max_version {
            Some(value) => self.tls_version(value, "max_version")?,
            None => 13,
        };
        if min > max {
            return Err(self.invalid(
                min_version.and_then(at),
                format!("tls_server_config.min_version TLS{min} is above max_version TLS{max}"),
            ));
        }
        Ok(TlsVersions { min, max })
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
}
