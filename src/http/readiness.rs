//! [`Readiness`]: what `/-/ready` asks before it answers `200`.
//!
//! It owns the answer's wording and status (`200 mqtt-pulse is Ready.`, or
//! `503` with the reason); what "ready" means belongs to whoever builds it
//! (the daemon: its config loaded and every target it owns attempted once).
//! A check runs on each probe, which no credentials or rate limit guard, so
//! it must be cheap and never block.

use std::fmt;
use std::sync::Arc;

use axum::http::StatusCode;

/// Whether a process is ready, as `/-/ready` tells probes: a check run at
/// each request, `Ok` when ready, else the reason (one line).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use mqtt_pulse::http::Readiness;
///
/// let warmed_up = Arc::new(AtomicBool::new(false));
/// let flag = Arc::clone(&warmed_up);
/// let readiness = Readiness::new(move || match flag.load(Ordering::Relaxed) {
///     true => Ok(()),
///     false => Err("still warming up".to_owned()),
/// });
/// assert_eq!(readiness.check(), Err("still warming up".to_owned()));
/// warmed_up.store(true, Ordering::Relaxed);
/// assert_eq!(readiness.check(), Ok(()));
/// assert_eq!(Readiness::always().check(), Ok(()));
/// ```
#[derive(Clone)]
pub struct Readiness {
    check: Arc<dyn Fn() -> Result<(), String> + Send + Sync>,
}

impl Readiness {
    /// Ready whenever asked: a process that serves is ready
    /// ([`ready_route`](super::ready_route)'s answer).
    pub fn always() -> Self {
        Readiness::new(|| Ok(()))
    }

    /// Ready when `check` says `Ok`; its `Err` is the reason `/-/ready`
    /// gives with `503`. It runs on an async worker at each probe: keep it
    /// cheap and never block in it.
    pub fn new(check: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Self {
        Readiness {
            check: Arc::new(check),
        }
    }

    /// Runs the check.
    pub fn check(&self) -> Result<(), String> {
        (self.check)()
    }

    /// The probe's answer.
    pub(super) fn answer(&self) -> (StatusCode, String) {
        match self.check() {
            Ok(()) => (StatusCode::OK, "mqtt-pulse is Ready.\n".to_owned()),
            Err(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("mqtt-pulse is not ready: {reason}\n"),
            ),
        }
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::always()
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness").finish_non_exhaustive()
    }
}
