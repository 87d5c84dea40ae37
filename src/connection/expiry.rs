//! When the certificate chain a TLS broker presented expires: the server
//! certificate verifier that records it, and the small DER read of `notAfter`.
//!
//! It owns [`ChainExpiry`] (where the verifier leaves the earliest `notAfter`
//! of the end-entity and intermediate certificates it has just verified, for
//! the driver to hand to the hub) and [`RecordingVerifier`], which wraps
//! rustls's `WebPkiServerVerifier`. It must never accept a chain the inner
//! verifier refused, never record an expiry for a chain it did not verify (so
//! `insecure_skip_verify` and a wrong CA record nothing), and never block: it
//! runs inside the TLS handshake on the connection's task.
//!
//! The chain is the one presented (end entity and intermediates, as
//! blackbox_exporter's `probe_ssl_earliest_cert_expiry` reads them): rustls
//! does not say which path it built, and a broker that sends an extra
//! certificate that expires early is a broker whose chain needs attention.
//!
//! # Why a DER read of our own
//!
//! `x509-parser` is a dependency only with the `web-config` feature; the lean
//! library (`--no-default-features`) must export the expiry too, without ten
//! more crates for one field. The certificates read here have just passed
//! webpki's verification, so they are well-formed DER: the read walks the
//! fixed start of `TBSCertificate` (version, serial, signature algorithm,
//! issuer) to `validity` and decodes `notAfter` (UTCTime or GeneralizedTime,
//! RFC 5280 §4.1.2.5). Anything unexpected gives `None` and nothing is
//! recorded, rather than a wrong date.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::DigitallySignedStruct as Dss;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// No expiry recorded since the last [`ChainExpiry::take`].
const NONE: i64 = i64::MIN;

/// Where a [`RecordingVerifier`] leaves the expiry of the chain it verified
/// last, as Unix seconds, until the connection's task takes it.
///
/// Clones share the slot: the options a connection was started with and the
/// copy its task keeps (to rebuild the TLS configuration before a reconnect)
/// see the same one. It is runtime state, not a setting, so it never makes
/// two [`ConnectionOptions`](super::ConnectionOptions) unequal.
#[derive(Clone, Debug)]
pub(crate) struct ChainExpiry(Arc<AtomicI64>);

impl Default for ChainExpiry {
    fn default() -> Self {
        Self(Arc::new(AtomicI64::new(NONE)))
    }
}

impl PartialEq for ChainExpiry {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ChainExpiry {}

impl ChainExpiry {
    fn record(&self, unix_seconds: i64) {
        self.0.store(unix_seconds, Ordering::Release);
    }

    /// The expiry recorded since the last call, if a chain was verified since.
    pub(crate) fn take(&self) -> Option<SystemTime> {
        match self.0.swap(NONE, Ordering::AcqRel) {
            NONE => None,
            seconds => Some(system_time(seconds)),
        }
    }
}

fn system_time(unix_seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(unix_seconds.unsigned_abs());
    if unix_seconds >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// rustls's WebPKI verifier, plus: after a chain passed, its earliest
/// `notAfter` goes to a [`ChainExpiry`].
#[derive(Debug)]
pub(crate) struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    expiry: ChainExpiry,
}

impl RecordingVerifier {
    pub(crate) fn new(inner: Arc<WebPkiServerVerifier>, expiry: ChainExpiry) -> Self {
        Self { inner, expiry }
    }
}

/// The answer to a handshake signature check.
type SignatureCheck = Result<HandshakeSignatureValid, rustls::Error>;

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match earliest_not_after(std::iter::once(end_entity).chain(intermediates)) {
            Some(seconds) => self.expiry.record(seconds),
            None => tracing::debug!("cannot read notAfter of a verified certificate chain"),
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        msg: &[u8],
        cert: &CertificateDer<'_>,
        dss: &Dss,
    ) -> SignatureCheck {
        self.inner.verify_tls12_signature(msg, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        msg: &[u8],
        cert: &CertificateDer<'_>,
        dss: &Dss,
    ) -> SignatureCheck {
        self.inner.verify_tls13_signature(msg, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// The earliest `notAfter` of `chain` in Unix seconds; `None` if the chain is
/// empty or any certificate's cannot be read (a minimum over part of the
/// chain could be later than the truth).
fn earliest_not_after<'a>(chain: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> Option<i64> {
    chain
        .into_iter()
        .map(|cert| not_after(cert.as_ref()))
        .try_fold(None, |earliest: Option<i64>, seconds| {
            let seconds = seconds?;
            Some(Some(earliest.map_or(seconds, |e| e.min(seconds))))
        })?
}

/// `tbsCertificate.validity.notAfter` of a DER certificate, in Unix seconds.
fn not_after(der: &[u8]) -> Option<i64> {
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0; // [0] EXPLICIT, constructed
    const INTEGER: u8 = 0x02;
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;

    let (certificate, _) = element(der, SEQUENCE)?;
    let (mut tbs, _) = element(certificate, SEQUENCE)?;
    if tbs.first() == Some(&VERSION) {
        tbs = element(tbs, VERSION)?.1;
    }
    let (_serial, rest) = element(tbs, INTEGER)?;
    let (_signature, rest) = element(rest, SEQUENCE)?;
    let (_issuer, rest) = element(rest, SEQUENCE)?;
    let (validity, _) = element(rest, SEQUENCE)?;
    let (_not_before, rest) = any_element(validity)?;
    let (&tag, _) = rest.split_first()?;
    let (time, _) = element(rest, tag)?;
    match tag {
        UTC_TIME => {
            // YYMMDDHHMMSSZ; RFC 5280: YY >= 50 is 19YY, otherwise 20YY.
            let (yy, rest) = time.split_at_checked(2)?;
            let yy = digits(yy)?;
            let year = if yy >= 50 { 1900 + yy } else { 2000 + yy };
            time_of(year, rest)
        }
        GENERALIZED_TIME => {
            let (yyyy, rest) = time.split_at_checked(4)?;
            time_of(digits(yyyy)?, rest)
        }
        _ => None,
    }
}

/// `MMDDHHMMSSZ` of `year` in Unix seconds (RFC 5280 requires seconds and `Z`).
fn time_of(year: i64, rest: &[u8]) -> Option<i64> {
    if rest.len() != 11 || rest[10] != b'Z' {
        return None;
    }
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

fn digits(text: &[u8]) -> Option<i64> {
    text.iter().try_fold(0i64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The contents of the DER element at the start of `input` if its tag is
/// `tag`, and what follows it.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match any_element(input)? {
        (contents, rest) if input[0] == tag => Some((contents, rest)),
        _ => None,
    }
}

/// The contents of the DER element at the start of `input` (single-byte
/// tag, definite length), and what follows it.
fn any_element(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&_tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > std::mem::size_of::<usize>() {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(count)?;
        let length = bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
        (length, rest)
    };
    rest.split_at_checked(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate valid until `seconds` into the day
    /// `year-month-day` (UTC).
    fn certificate(year: i32, month: u8, day: u8, seconds: u64) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(year, month, day) + Duration::from_secs(seconds);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn not_after_is_read_from_utc_time_and_generalized_time_to_the_second() {
        // Expected values from `date -u -d 2031-03-01T12:34:56 +%s` and so on.
        for (year, month, day, seconds, expected) in [
            (2031, 3, 1, 45_296, 1_930_134_896),   // UTCTime (before 2050)
            (2049, 12, 31, 86_399, 2_524_607_999), // the last UTCTime year
            (2050, 1, 1, 0, 2_524_608_000),        // GeneralizedTime from 2050 on
            (2100, 2, 28, 3_723, 4_107_459_723),
            (2000, 2, 29, 1, 951_782_401), // a leap day of a /400 year
        ] {
            let der = certificate(year, month, day, seconds);
            assert_eq!(
                not_after(der.as_ref()),
                Some(expected),
                "{year}-{month}-{day}"
            );
        }
    }

    #[test]
    fn the_earliest_of_the_chain_wins_and_an_unreadable_certificate_gives_none() {
        let (a, b) = (certificate(2040, 6, 1, 0), certificate(2031, 1, 1, 0));
        assert_eq!(earliest_not_after([&a, &b]), Some(1_924_992_000));
        assert_eq!(earliest_not_after([&a]), Some(2_222_121_600));
        assert_eq!(earliest_not_after(std::iter::empty()), None);
        let broken = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        assert_eq!(earliest_not_after([&a, &broken]), None);
    }

    #[test]
    fn truncated_or_foreign_input_gives_none_never_a_panic() {
        let der = certificate(2031, 1, 1, 0);
        let der = der.as_ref();
        for len in 0..der.len() {
            // Cut anywhere: the outer length no longer matches, or an inner
            // element runs past the end.
            let _ = not_after(&der[..len]);
        }
        assert_eq!(not_after(&[]), None);
        assert_eq!(not_after(b"-----BEGIN CERTIFICATE-----"), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn utc_time_years_from_50_are_the_twentieth_century() {
        assert_eq!(time_of(1950, b"0101000000Z"), Some(-631_152_000));
        assert_eq!(time_of(1970, b"0101000000Z"), Some(0));
        assert_eq!(time_of(2024, b"1301000000Z"), None, "month 13");
        assert_eq!(time_of(2024, b"0101000000"), None, "no Z");
        assert_eq!(time_of(2024, b"0101000000+"), None);
    }

    #[test]
    fn a_taken_expiry_is_gone_and_clones_share_the_slot() {
        let slot = ChainExpiry::default();
        assert_eq!(slot.take(), None);
        slot.clone().record(1_000);
        assert_eq!(slot.take(), Some(UNIX_EPOCH + Duration::from_secs(1_000)));
        assert_eq!(slot.take(), None);
        assert_eq!(ChainExpiry::default(), slot, "never makes options unequal");
    }
}
