//! The daemon's OTLP exporter: started from the `[otlp]` table or the
//! `OTEL_EXPORTER_OTLP_*` environment, stopped after the last push.
//!
//! It owns translating the config into the exporter's builder calls; it must
//! never keep a push from the shutdown path for longer than the exporter's own
//! timeout.

use prometheus::Registry;

use super::DaemonError;
use crate::config::Config;
#[cfg(feature = "otlp")]
use crate::config::OtlpConfig;
use crate::events::Events;

/// The running OTLP exporter, if `[otlp]` or `OTEL_EXPORTER_OTLP_*` asks for one.
#[cfg(feature = "otlp")]
pub(super) type Otlp = Option<crate::exporter::otlp::OtlpHandle>;
#[cfg(not(feature = "otlp"))]
pub(super) type Otlp = Option<std::convert::Infallible>;

#[cfg(feature = "otlp")]
pub(super) fn start_otlp(
    config: &Config,
    events: &Events,
    registry: &Registry,
) -> Result<Otlp, DaemonError> {
    use crate::exporter::otlp::{OtlpBuilder, configured_by_env};
    let builder = match config.otlp() {
        Some(otlp) => builder_calls(OtlpBuilder::new(events), otlp),
        None if configured_by_env() => OtlpBuilder::new(events),
        None => return Ok(None),
    };
    // The same bucket layout as /metrics, so both sides agree on quantiles.
    let builder = match config.rtt_buckets() {
        Some(bounds) => builder.with_buckets(bounds),
        None => builder,
    };
    let handle = builder
        .with_prometheus_registry(registry.clone())
        .install()?;
    tracing::info!(
        protocol = ?handle.protocol(),
        endpoint = handle.endpoint(),
        interval = ?handle.interval(),
        "pushing metrics over OTLP"
    );
    Ok(Some(handle))
}

/// The `[otlp]` table as builder calls: endpoint, interval and timeout when
/// present, the protocol always (the table's default, gRPC, overrides
/// `OTEL_EXPORTER_OTLP_PROTOCOL`), and the headers.
#[cfg(feature = "otlp")]
fn builder_calls(
    mut builder: crate::exporter::otlp::OtlpBuilder,
    otlp: &OtlpConfig,
) -> crate::exporter::otlp::OtlpBuilder {
    builder = builder.with_protocol(otlp.protocol());
    if let Some(endpoint) = otlp.endpoint() {
        builder = builder.with_endpoint(endpoint.as_str());
    }
    if let Some(interval) = otlp.interval() {
        builder = builder.with_interval(interval);
    }
    if let Some(timeout) = otlp.timeout() {
        builder = builder.with_timeout(timeout);
    }
    for (name, value) in otlp.headers() {
        builder = builder.with_header(name, value);
    }
    builder
}

#[cfg(not(feature = "otlp"))]
pub(super) fn start_otlp(
    config: &Config,
    _events: &Events,
    _registry: &Registry,
) -> Result<Otlp, DaemonError> {
    if config.otlp().is_some() {
        tracing::warn!(
            "the config file has an [otlp] table, but this build has no OTLP support (feature `otlp`); ignoring it"
        );
    }
    Ok(None)
}

/// Pushes the last batch and stops the OTLP exporter.
#[cfg(feature = "otlp")]
pub(super) async fn stop_otlp(otlp: Otlp) {
    if let Some(otlp) = otlp
        && let Err(error) = otlp.shutdown().await
    {
        tracing::warn!(%error, "the final OTLP push failed");
    }
}

#[cfg(not(feature = "otlp"))]
pub(super) async fn stop_otlp(_otlp: Otlp) {}
