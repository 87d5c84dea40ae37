//! Basic auth against the web config's `basic_auth_users` (bcrypt hashes).
//!
//! It owns reading the `Authorization` header, checking a password against
//! its hash, remembering credentials that passed, and keeping wrong
//! passwords from using up the CPU or starving right ones. bcrypt is slow on
//! purpose (~70 ms at cost 10, ~1 s at cost 14), so:
//!
//! 1. **Remembered passes first.** A user and password that passed are kept
//!    as a salted SHA-256 (never the password itself) and checked before
//!    anything else: a scraper pays for bcrypt on its first request only, and
//!    nothing below ever delays it again.
//! 2. **A failure budget per client address** (`failures`): an address (an
//!    IPv6 /64) may have 5 attempts failed or in flight; then it is answered
//!    `429` with `Retry-After`, without hashing, and gets one attempt more
//!    every 12 s. A pass gives its attempt back.
//! 3. **Hash slots held by the hash** (`hash_slots`): at most half the CPUs'
//!    worth of hashes run at a time, each on a blocking thread that holds its
//!    slot until the hash is done — a client that hangs up does not free it.
//!    Others wait in a bounded queue, requests from an address with nothing
//!    failed ahead of the rest; a full queue answers `503` at once.
//!
//! So under a wrong-password flood a correct login from another address
//! waits for at most the hashes already running, then its own; one that
//! shares the attackers' address (a NAT, a proxy) can be refused `429` until
//! the flood stops. Failures are not remembered otherwise. An unknown user is
//! checked against a real hash too, so the answer's timing does not tell
//! which users exist.
//!
//! It must never log, return or keep a password or a hash anywhere but in
//! the user table, never run bcrypt on an async worker, never start more
//! hashes than it has slots, and never ask the health endpoints
//! (`/-/healthy`, `/-/ready`) for credentials: probes must work without them.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::failures::{Charge, FailureBudget, Source};
use super::hash_slots::{HashSlots, Priority};
use super::secret::Secret;
use crate::sync::lock;

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

/// How many requests may wait for a hash slot; more are answered `503` at
/// once. With 5 attempts per address, room for a dozen addresses' worth.
const MAX_WAITING: usize = 64;

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

/// What [`BasicAuth::check`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    /// The password of a configured user.
    Pass,
    /// No credentials, or wrong ones: `401`.
    Fail,
    /// The client's address has used its failure budget: `429`.
    TooManyFailures { retry_after: Duration },
    /// Every hash slot is taken and the queue is full: `503`.
    Busy,
}

/// The users and their hashes, the credentials that passed, the failure
/// budgets and the hash slots.
pub(crate) struct BasicAuth {
    users: BTreeMap<String, Secret>,
    /// Checked for a user that does not exist, so that it takes as long.
    decoy: Secret,
    salt: [u8; 32],
    passed: Arc<Mutex<HashSet<Vec<u8>>>>,
    failures: Arc<Mutex<FailureBudget>>,
    slots: HashSlots,
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
        let parallel = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
        Self::with_slots(users, parallel)
    }

    fn with_slots(users: BTreeMap<String, Secret>, slots: usize) -> Self {
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
        BasicAuth {
            users,
            decoy,
            salt,
            passed: Arc::default(),
            failures: Arc::default(),
            slots: HashSlots::new(slots, MAX_WAITING),
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

    /// Whether `authorization`, sent from `peer`, holds the password of a
    /// configured user; see the [module docs](self) for the order of checks.
    pub(crate) async fn check(
        &self,
        authorization: Option<&HeaderValue>,
        peer: Option<IpAddr>,
    ) -> Verdict {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return Verdict::Fail;
        };
        let digest = self.digest(&user, &password);
        if is_remembered(&self.passed, digest.as_deref()) {
            return Verdict::Pass;
        }
        let source = Source::of(peer);
        let priority = match lock(&self.failures).charge(source, Instant::now()) {
            Charge::Refused { retry_after } => return Verdict::TooManyFailures { retry_after },
            Charge::Clean => Priority::Clean,
            Charge::Suspect => Priority::Suspect,
        };
        // Refunded unless a hash runs and fails, whatever happens to this
        // request from here on.
        let attempt = Attempt {
            failures: Arc::clone(&self.failures),
            source,
            failed: false,
        };
        let Some(slot) = self.slots.acquire(priority).await else {
            return Verdict::Busy;
        };
        // The same credentials may have passed while this request waited.
        if is_remembered(&self.passed, digest.as_deref()) {
            return Verdict::Pass;
        }
        let (hash, known) = match self.users.get(&user) {
            Some(hash) => (hash.0.clone(), true),
            None => (self.decoy.0.clone(), false),
        };
        let passed = Arc::clone(&self.passed);
        // Everything after the hash happens on its thread, so that it
        // happens even if the client has gone: the slot is released, the
        // attempt refunded or counted, the pass remembered.
        let hashing = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let mut attempt = attempt;
            let matches = bcrypt::verify(&password, &hash).unwrap_or(false) && known;
            match digest {
                Some(digest) if matches => remember(&passed, digest),
                _ => attempt.failed = !matches,
            }
            matches
        });
        if hashing.await.unwrap_or(false) {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    }

    /// [`check`](Self::check) without an address, for the tests.
    #[cfg(test)]
    async fn allows(&self, authorization: Option<&HeaderValue>) -> bool {
        self.check(authorization, None).await == Verdict::Pass
    }

    #[cfg(test)]
    fn remembered(&self) -> std::sync::MutexGuard<'_, HashSet<Vec<u8>>> {
        lock(&self.passed)
    }
}

/// One attempt charged to a source's failure budget: given back on drop
/// unless it `failed`.
struct Attempt {
    failures: Arc<Mutex<FailureBudget>>,
    source: Source,
    failed: bool,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.failed {
            lock(&self.failures).refund(self.source, Instant::now());
        }
    }
}

fn is_remembered(passed: &Mutex<HashSet<Vec<u8>>>, digest: Option<&[u8]>) -> bool {
    digest.is_some_and(|digest| lock(passed).contains(digest))
}

fn remember(passed: &Mutex<HashSet<Vec<u8>>>, digest: Vec<u8>) {
    let mut remembered = lock(passed);
    if remembered.len() >= REMEMBERED {
        remembered.clear();
    }
    remembered.insert(digest);
}

/// The `reason` label of each refusal, as [`Verdict::refusal_reason`] names it.
pub(crate) const REFUSAL_REASONS: [&str; 3] = ["unauthorized", "too_many_failures", "busy"];

impl Verdict {
    /// The `reason` label of a refusal (`401`, `429`, `503`); `None` for a pass.
    pub(crate) fn refusal_reason(self) -> Option<&'static str> {
        match self {
            Verdict::Pass => None,
            Verdict::Fail => Some(REFUSAL_REASONS[0]),
            Verdict::TooManyFailures { .. } => Some(REFUSAL_REASONS[1]),
            Verdict::Busy => Some(REFUSAL_REASONS[2]),
        }
    }
}

/// The answer to a refused [`Verdict`]: `401` with the `WWW-Authenticate`
/// challenge, `429` or `503` with `Retry-After`.
pub(crate) fn refusal(verdict: Verdict) -> Response {
    match verdict {
        Verdict::Pass | Verdict::Fail => unauthorized(),
        Verdict::TooManyFailures { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            [(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs_f64().ceil() as u64),
            )],
            "429 too many failed logins from this address; try again later\n",
        )
            .into_response(),
        Verdict::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
            "503 too many logins being checked; try again\n",
        )
            .into_response(),
    }
}

/// The answer to a request without valid credentials: `401` with the
/// `WWW-Authenticate` challenge.
fn unauthorized() -> Response {
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

    fn from(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, last]))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_address_that_keeps_failing_is_refused_429_without_hashing_others_are_not() {
        let auth = auth(&[("alice", "wonderland")]);
        let wrong = basic("alice:guess");
        for _ in 0..super::super::failures::BURST {
            assert_eq!(auth.check(Some(&wrong), from(1)).await, Verdict::Fail);
        }
        let Verdict::TooManyFailures { retry_after } = auth.check(Some(&wrong), from(1)).await
        else {
            panic!("not refused");
        };
        assert!(retry_after > Duration::ZERO && retry_after <= super::super::failures::REFILL);
        // Refused before any hash: no slot was taken for it.
        assert_eq!(auth.slots.most_running(), 1);
        assert_eq!(auth.slots.running(), 0);
        let right = basic("alice:wonderland");
        assert_eq!(auth.check(Some(&right), from(2)).await, Verdict::Pass);
        // Once remembered, a pass is a pass even from the refused address.
        assert_eq!(auth.check(Some(&right), from(1)).await, Verdict::Pass);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn passes_give_their_attempt_back() {
        let users: Vec<(String, String)> = (0..12)
            .map(|i| (format!("user{i}"), format!("password{i}")))
            .collect();
        let users: Vec<(&str, &str)> = users
            .iter()
            .map(|(u, p)| (u.as_str(), p.as_str()))
            .collect();
        let auth = auth(&users);
        for (user, password) in &users {
            let header = basic(&format!("{user}:{password}"));
            assert_eq!(auth.check(Some(&header), from(1)).await, Verdict::Pass);
        }
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
