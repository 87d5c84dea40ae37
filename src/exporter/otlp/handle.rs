//! The handle on a running OTLP exporter: the settings in use, the push
//! counts, flush and shutdown — and, when the last handle goes, a shutdown on
//! a thread of its own.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_sdk::metrics::SdkMeterProvider;
use tokio::sync::{oneshot, watch};

use super::monitor::{ExportMonitor, ExportStats};
use super::sdk::Instruments;
use super::settings::Resolved;
use super::{OtlpError, OtlpProtocol};
use crate::sync::lock;

/// A cheap, cloneable handle on a running OTLP exporter: its settings, its
/// push counts, flush and shutdown. Clones share the exporter; dropping the
/// last one shuts it down (flushing) on a thread of its own.
#[derive(Clone)]
pub struct OtlpHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    provider: Mutex<Option<SdkMeterProvider>>,
    monitor: Arc<ExportMonitor>,
    /// Dropped or fired to end the consumer task.
    stop: Mutex<Option<oneshot::Sender<()>>>,
    protocol: OtlpProtocol,
    endpoint: String,
    interval: Duration,
    timeout: Duration,
    _instruments: Instruments,
}

impl OtlpHandle {
    /// The handle on an exporter pushing through `provider`, whose consumer
    /// task ends when `stop` fires or is dropped.
    pub(super) fn new(
        provider: SdkMeterProvider,
        monitor: Arc<ExportMonitor>,
        stop: oneshot::Sender<()>,
        resolved: &Resolved,
        endpoint: String,
        instruments: Instruments,
    ) -> Self {
        Self {
            inner: Arc::new(HandleInner {
                provider: Mutex::new(Some(provider)),
                monitor,
                stop: Mutex::new(Some(stop)),
                protocol: resolved.protocol,
                endpoint,
                interval: resolved.interval,
                timeout: resolved.timeout,
                _instruments: instruments,
            }),
        }
    }

    /// The transport in use.
    pub fn protocol(&self) -> OtlpProtocol {
        self.inner.protocol
    }

    /// The URL pushed to (for HTTP, with `/v1/metrics`), without credentials.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The time between two pushes.
    pub fn interval(&self) -> Duration {
        self.inner.interval
    }

    /// How long one push may take.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Pushes attempted so far, by outcome.
    pub fn stats(&self) -> ExportStats {
        self.inner.monitor.stats()
    }

    /// A receiver that sees [`stats`](Self::stats) change after every push;
    /// `wait_for` on it to await a push without polling.
    pub fn watch_stats(&self) -> watch::Receiver<ExportStats> {
        self.inner.monitor.watch()
    }

    /// Collects and pushes now, outside the interval, and waits for the push
    /// (at most the timeout, retries included). Runs on Tokio's blocking pool.
    ///
    /// # Errors
    ///
    /// [`OtlpError::Flush`] if the push failed, [`OtlpError::ShutDown`] after
    /// [`shutdown`](Self::shutdown).
    pub async fn flush(&self) -> Result<(), OtlpError> {
        let Some(provider) = lock(&self.inner.provider).clone() else {
            return Err(OtlpError::ShutDown);
        };
        match tokio::task::spawn_blocking(move || provider.force_flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(OtlpError::Flush(
                self.inner.monitor.scrub(&error.to_string()),
            )),
            Err(_) => Err(OtlpError::Flush("the flush task panicked".to_owned())),
        }
    }

    /// Collects and pushes one last time — every event dispatched before the
    /// call is in that push — then stops the exporter (the SDK gives the push
    /// at most 5 s). Runs the SDK's blocking shutdown on Tokio's blocking pool,
    /// so it is safe on a current-thread runtime. A second call does nothing.
    ///
    /// # Errors
    ///
    /// [`OtlpError::Shutdown`] if the last push failed or timed out; the
    /// exporter is stopped all the same.
    pub async fn shutdown(&self) -> Result<(), OtlpError> {
        let Some(provider) = lock(&self.inner.provider).take() else {
            return Ok(());
        };
        let outcome = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Some(stop) = lock(&self.inner.stop).take() {
            let _ = stop.send(());
        }
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(OtlpError::Shutdown(
                self.inner.monitor.scrub(&error.to_string()),
            )),
            Err(_) => Err(OtlpError::Shutdown("the shutdown task panicked".to_owned())),
        }
    }
}

impl fmt::Debug for OtlpHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpHandle")
            .field("protocol", &self.inner.protocol)
            .field("endpoint", &self.inner.endpoint)
            .field("interval", &self.inner.interval)
            .field("timeout", &self.inner.timeout)
            .field("stats", &self.stats())
            .field("running", &lock(&self.inner.provider).is_some())
            .finish()
    }
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        // The SDK's shutdown blocks until the last push is done; never make the
        // thread dropping the handle (maybe a runtime worker) wait for it.
        let Some(provider) = lock(&self.provider).take() else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("mqtt-pulse-otlp-shutdown".to_owned())
            .spawn(move || {
                let _ = provider.shutdown();
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start a thread to flush the OTLP exporter; its last push is lost");
        }
    }
}
