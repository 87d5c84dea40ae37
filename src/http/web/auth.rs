//! Basic auth against the web config's `basic_auth_users` (bcrypt hashes).
//!
//! It owns reading the `Authorization` header, checking a password against
//! its hash, and remembering credentials that passed. bcrypt is slow on
//! purpose (~70 ms at cost 10), so a check runs on a blocking thread, at most
//! half the CPUs' worth at a time; a user and password that passed are kept as
//! a salted SHA-256 (never the password itself), so a scraper pays for bcrypt
//! on its first request only. Failures are not remembered: every wrong guess
//! costs a full bcrypt. An unknown user is checked against a real hash too, so
//! the answer's timing does not tell which users exist.
//!
//! It must never log, return or keep a password or a hash anywhere but in
//! the user table, never run bcrypt on an async worker, and never ask the
//! health endpoints (`/-/healthy`, `/-/ready`) for credentials: probes must
//! work without them.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr as _;
use std::sync::Mutex;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use tokio::sync::Semaphore;

use super::secret::Secret;

/// Standard base64 with the padding optional, as browsers and curl send it
/// either way.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The `WWW-Authenticate` challenge of a `401`.
const CHALLENGE: &str = "Basic realm=\"mqtt-pulse\"";

/// How many credentials that passed are remembered before the memory is
/// cleared (only correct passwords get in, so this is the number of distinct
/// scrapers, not of attempts).
const REMEMBERED: usize = 256;

/// Checks that `hash` is a bcrypt hash (`$2a$`, `$2b$`, `$2x$` or `$2y$`,
/// cost 4 to 31). The error is a fixed description; it never holds the hash.
pub(crate) fn check_hash(hash: &str) -> Result<(), String> {
    match bcrypt::HashParts::from_str(hash) {
        Ok(parts) if (4..=31).contains(&parts.get_cost()) => Ok(()),
        Ok(parts) => Err(format!("cost {} is outside 4 to 31", parts.get_cost())),
        Err(bcrypt::BcryptError::InvalidHash(reason)) => Err(reason.to_owned()),
        Err(_) => Err("the hash format is malformed".to_owned()),
    }
}

/// The users and their hashes, and the credentials that passed.
pub(crate) struct BasicAuth {
    users: BTreeMap<String, Secret>,
    /// Checked for a user that does not exist, so that it takes as long.
    decoy: Secret,
    salt: [u8; 32],
    passed: Mutex<HashSet<Vec<u8>>>,
    verifying: Semaphore,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    /// `users` must not be empty and every hash must pass [`check_hash`].
    pub(crate) fn new(users: BTreeMap<String, Secret>) -> Self {
        let decoy = users
            .values()
            .next()
            .cloned()
            .unwrap_or_else(|| Secret(String::new()));
        let mut salt = [0u8; 32];
        if rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut salt)
            .is_err()
        {
            salt.fill_with(|| fastrand::u8(..));
        }
        let parallel = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
        BasicAuth {
            users,
            decoy,
            salt,
            passed: Mutex::new(HashSet::new()),
            verifying: Semaphore::new(parallel),
        }
    }

    pub(crate) fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Salted SHA-256 of user and password: what is remembered of a pass.
    fn digest(&self, user: &str, password: &[u8]) -> Option<Vec<u8>> {
        let sha256 = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
            .tls13()?
            .common
            .hash_provider;
        let mut context = sha256.start();
        context.update(&self.salt);
        context.update(&(user.len() as u64).to_be_bytes());
        context.update(user.as_bytes());
        context.update(password);
        Some(context.finish().as_ref().to_vec())
    }

    /// Whether `authorization` holds the password of a configured user.
    pub(crate) async fn allows(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return false;
        };
        let digest = self.digest(&user, &password);
        if let Some(digest) = &digest
            && self.remembered().contains(digest)
        {
            return true;
        }
        let (hash, known) = match self.users.get(&user) {
            Some(hash) => (hash.0.clone(), true),
            None => (self.decoy.0.clone(), false),
        };
        let Ok(_permit) = self.verifying.acquire().await else {
            return false;
        };
        let matches =
            tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if !(matches && known) {
            return false;
        }
        if let Some(digest) = digest {
            let mut remembered = self.remembered();
            if remembered.len() >= REMEMBERED {
                remembered.clear();
            }
            remembered.insert(digest);
        }
        true
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashSet<Vec<u8>>> {
        // A panic elsewhere while holding it cannot leave the set inconsistent.
        self.passed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The answer to a request without valid credentials: `401` with the
/// `WWW-Authenticate` challenge.
pub(crate) fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(CHALLENGE),
        )],
        "401 Unauthorized\n",
    )
        .into_response()
}

/// `Basic base64(user:password)` → user and password.
fn credentials(header: &HeaderValue) -> Option<(String, Vec<u8>)> {
    let value = header.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = BASE64.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&byte| byte == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn auth(users: &[(&str, &str)]) -> BasicAuth {
        BasicAuth::new(
            users
                .iter()
                .map(|(user, password)| {
                    let hash = bcrypt::hash(password, 4).unwrap();
                    ((*user).to_owned(), Secret(hash))
                })
                .collect(),
        )
    }

    fn basic(user_password: &str) -> HeaderValue {
        let encoded = encode(user_password.as_bytes());
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    fn encode(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn credentials_are_read_with_and_without_padding_and_not_in_other_alphabets() {
        for user_password in ["a:", "ab:", "abc:", "\u{e9}:\u{1f600}"] {
            let encoded = encode(user_password.as_bytes());
            for encoded in [encoded.as_str(), encoded.trim_end_matches('=')] {
                let header = HeaderValue::from_str(&format!("Basic {encoded}")).unwrap();
                let (user, password) = credentials(&header).unwrap();
                assert_eq!(
                    format!("{user}:{}", String::from_utf8(password).unwrap()),
                    user_password
                );
            }
        }
        for bad in ["Basic a", "Basic YTpi-_==", "Basic YT pi"] {
            assert_eq!(credentials(&HeaderValue::from_static(bad)), None, "{bad}");
        }
    }

    #[test]
    fn credentials_split_at_the_first_colon_and_need_the_basic_scheme() {
        let (user, password) = credentials(&basic("alice:pa:ss")).unwrap();
        assert_eq!(
            (user.as_str(), password.as_slice()),
            ("alice", &b"pa:ss"[..])
        );
        let lower = HeaderValue::from_str(&format!("basic {}", encode(b"bob:x"))).unwrap();
        assert_eq!(credentials(&lower).unwrap().0, "bob");
        assert_eq!(credentials(&basic("no colon")), None);
        assert_eq!(credentials(&HeaderValue::from_static("Bearer abc")), None);
        assert_eq!(credentials(&HeaderValue::from_static("Basic")), None);
    }

    #[test]
    fn hashes_are_checked_for_format_and_cost_without_echoing_them() {
        assert_eq!(check_hash(&bcrypt::hash("pw", 4).unwrap()), Ok(()));
        let secret_looking = "$2y$10$this-is-not-a-valid-bcrypt-hash-but-looks-a-bit-like-one";
        let error = check_hash(secret_looking).unwrap_err();
        assert!(!error.contains("this-is-not"), "{error}");
        assert!(check_hash("plain password").is_err());
        let cost_3 = bcrypt::hash("pw", 4).unwrap().replacen("$04$", "$03$", 1);
        assert_eq!(
            check_hash(&cost_3),
            Err("cost 3 is outside 4 to 31".to_owned())
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_right_password_passes_and_is_remembered_wrong_ones_and_strangers_do_not() {
        let auth = auth(&[("alice", "wonderland"), ("bob", "builder")]);
        assert!(auth.allows(Some(&basic("alice:wonderland"))).await);
        assert_eq!(auth.remembered().len(), 1);
        assert!(auth.allows(Some(&basic("alice:wonderland"))).await);
        assert!(auth.allows(Some(&basic("bob:builder"))).await);
        assert_eq!(auth.remembered().len(), 2);

        assert!(!auth.allows(Some(&basic("alice:builder"))).await);
        assert!(!auth.allows(Some(&basic("alice:"))).await);
        // The decoy is alice's hash: her password under another name fails.
        assert!(!auth.allows(Some(&basic("mallory:wonderland"))).await);
        assert!(!auth.allows(None).await);
        assert_eq!(auth.remembered().len(), 2, "failures are not remembered");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bcrypt_runs_off_the_async_worker() {
        // On a single-threaded runtime a bcrypt on the worker would run to its
        // end the first time the check is polled, before this task is polled
        // again; off the worker, the check is still going after a few turns.
        let auth = Arc::new(BasicAuth::new(
            [("alice".to_owned(), Secret(bcrypt::hash("pw", 8).unwrap()))].into(),
        ));
        let checking = tokio::spawn({
            let auth = Arc::clone(&auth);
            async move { auth.allows(Some(&basic("alice:wrong"))).await }
        });
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        assert!(!checking.is_finished(), "bcrypt ran on the async worker");
        assert!(!checking.await.unwrap());
    }
}
