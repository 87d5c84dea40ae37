//! Watching the pushes: the SDK's OTLP exporter wrapped so that every export
//! outcome is counted (`mqtt_pulse_otlp_export_failures_total`, the handle's
//! [`ExportStats`]) and failures are logged at most once per interval.
//!
//! It runs on the SDK's reader thread, inside the export call, and must never
//! block beyond the export itself: counting is atomic, the log limiter's lock
//! is held for a few instructions, and the stats channel never waits. It never
//! logs a header value: error texts are scrubbed first.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry_otlp::MetricExporter;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use prometheus::IntCounter;
use tokio::sync::watch;

use super::settings::scrub;
use crate::sync::lock;

/// The Prometheus counter of failed pushes, on the registry given to
/// [`OtlpBuilder::with_prometheus_registry`](super::OtlpBuilder::with_prometheus_registry).
pub const EXPORT_FAILURES_METRIC: &str = "mqtt_pulse_otlp_export_failures_total";
const FAILURES_HELP: &str =
    "OTLP metric exports that failed (collector unreachable, slow, or refusing).";

/// Pushes attempted since the exporter was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportStats {
    /// Pushes the collector accepted.
    pub exports: u64,
    /// Pushes that failed (also counted in [`EXPORT_FAILURES_METRIC`]).
    pub failures: u64,
}

/// Decides when a failed export is worth a log line: the first failure, then
/// at most one line per `every`, each telling how many failed since the last.
/// Sans-IO: fed instants.
#[derive(Debug)]
pub(super) struct FailureLog {
    every: Duration,
    last_warning: Option<Instant>,
    unreported: u64,
    streak: u64,
}

impl FailureLog {
    pub(super) fn new(every: Duration) -> Self {
        Self {
            every,
            last_warning: None,
            unreported: 0,
            streak: 0,
        }
    }

    /// One export failed at `now`. `Some(n)`: log now, `n` failures since the
    /// last line (this one included).
    pub(super) fn failure(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        self.streak += 1;
        let due = self
            .last_warning
            .is_none_or(|last| now.saturating_duration_since(last) >= self.every);
        if !due {
            return None;
        }
        self.last_warning = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }

    /// One export succeeded. `Some(n)`: the `n` exports before it failed.
    pub(super) fn success(&mut self) -> Option<u64> {
        self.unreported = 0;
        let streak = std::mem::take(&mut self.streak);
        (streak > 0).then_some(streak)
    }
}

/// Counts and logs export outcomes; shared by the exporter wrapper and the
/// handle.
pub(super) struct ExportMonitor {
    failures_total: IntCounter,
    stats: watch::Sender<ExportStats>,
    log: Mutex<FailureLog>,
    /// The endpoint as shown in logs (no credentials).
    endpoint: String,
    secrets: Vec<String>,
}

impl ExportMonitor {
    pub(super) fn new(endpoint: String, secrets: Vec<String>, log_every: Duration) -> Self {
        let failures_total = IntCounter::new(EXPORT_FAILURES_METRIC, FAILURES_HELP)
            .expect("the failure counter's name and help are valid");
        Self {
            failures_total,
            stats: watch::Sender::new(ExportStats::default()),
            log: Mutex::new(FailureLog::new(log_every)),
            endpoint,
            secrets,
        }
    }

    /// The counter to register on a Prometheus registry.
    pub(super) fn failures_counter(&self) -> IntCounter {
        self.failures_total.clone()
    }

    pub(super) fn stats(&self) -> ExportStats {
        *self.stats.borrow()
    }

    pub(super) fn watch(&self) -> watch::Receiver<ExportStats> {
        self.stats.subscribe()
    }

    /// Scrubs every header value out of `text`.
    pub(super) fn scrub(&self, text: &str) -> String {
        scrub(text, &self.secrets)
    }

    /// Logs first, then counts: whoever waits on the stats sees the log line.
    fn record(&self, result: &OTelSdkResult) {
        match result {
            Ok(()) => {
                if let Some(failed) = lock(&self.log).success() {
                    tracing::info!(
                        endpoint = %self.endpoint,
                        failed_exports = failed,
                        "OTLP export succeeded again"
                    );
                }
                self.stats.send_modify(|stats| stats.exports += 1);
            }
            Err(error) => {
                self.failures_total.inc();
                let due = lock(&self.log).failure(Instant::now());
                if let Some(failed) = due {
                    let error = self.scrub(&error.to_string());
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        failed_exports = failed,
                        %error,
                        "OTLP export failed; metrics of this interval are lost \
                         (failed_exports counts failures since the last such line)"
                    );
                }
                self.stats.send_modify(|stats| stats.failures += 1);
            }
        }
    }
}

/// The SDK's OTLP exporter, counting every outcome.
pub(super) struct CountingExporter {
    pub(super) inner: MetricExporter,
    pub(super) monitor: std::sync::Arc<ExportMonitor>,
}

impl std::fmt::Debug for CountingExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingExporter")
            .field("endpoint", &self.monitor.endpoint)
            .finish_non_exhaustive()
    }
}

impl PushMetricExporter for CountingExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.monitor.record(&result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_logged_then_one_line_per_interval_with_the_count() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut log = FailureLog::new(Duration::from_secs(10));
        assert_eq!(log.failure(at(0)), Some(1));
        assert_eq!(log.failure(at(1_000)), None);
        assert_eq!(log.failure(at(9_999)), None);
        assert_eq!(log.failure(at(10_000)), Some(3));
        assert_eq!(log.failure(at(10_001)), None);
        assert_eq!(log.failure(at(25_000)), Some(2));
    }

    #[test]
    fn a_success_reports_the_streak_it_ends_once() {
        let start = Instant::now();
        let mut log = FailureLog::new(Duration::from_secs(10));
        assert_eq!(log.success(), None);
        log.failure(start);
        log.failure(start);
        log.failure(start);
        assert_eq!(log.success(), Some(3));
        assert_eq!(log.success(), None);
    }

    #[test]
    fn after_a_recovery_the_next_failure_still_waits_for_the_interval() {
        let start = Instant::now();
        let mut log = FailureLog::new(Duration::from_secs(10));
        assert_eq!(log.failure(start), Some(1));
        log.success();
        assert_eq!(log.failure(start + Duration::from_secs(1)), None);
        assert_eq!(log.failure(start + Duration::from_secs(10)), Some(2));
    }

    #[test]
    fn outcomes_are_counted_in_the_stats_and_the_prometheus_counter() {
        let monitor = ExportMonitor::new("http://c:4317".into(), vec![], Duration::from_secs(60));
        let mut stats = monitor.watch();
        monitor.record(&Ok(()));
        monitor.record(&Err(
            opentelemetry_sdk::error::OTelSdkError::InternalFailure("refused".into()),
        ));
        monitor.record(&Ok(()));
        assert_eq!(
            monitor.stats(),
            ExportStats {
                exports: 2,
                failures: 1
            }
        );
        assert_eq!(monitor.failures_counter().get(), 1);
        assert!(stats.has_changed().unwrap());
        assert_eq!(
            *stats.borrow_and_update(),
            ExportStats {
                exports: 2,
                failures: 1
            }
        );
    }
}
