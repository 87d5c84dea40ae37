//! The OpenTelemetry SDK's side: its OTLP exporter for the resolved settings,
//! the meter provider with its periodic reader (the SDK's own thread), and
//! the three instruments, fed by the [`Recorder`].

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry::metrics::{
    AsyncInstrument, AsyncInstrumentBuilder, MeterProvider as _, ObservableCounter, ObservableGauge,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{
    ExporterBuildError, MetricExporter, Protocol, WithExportConfig as _, WithHttpConfig as _,
    WithTonicConfig as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{Instrument, PeriodicReader, SdkMeterProvider, Stream};
use opentelemetry_sdk::resource::TelemetryResourceDetector;

use super::OtlpProtocol;
use super::monitor::CountingExporter;
use super::recorder::Recorder;
use super::settings::{self, Resolved};
use crate::events::{Events, Subscription};
use crate::exporter::consume::COUNTED_STATUSES;

/// The name of the up gauge.
pub const UP_METRIC: &str = "mqtt.client.up";
/// The name of the ping round-trip histogram (unit `s`).
pub const PING_RTT_METRIC: &str = "mqtt.client.ping.rtt";
/// The name of the status-change counter.
pub const STATUS_CHANGES_METRIC: &str = "mqtt.client.status.changes";
/// The name of the broker-to-broker path latency histogram (unit `s`).
pub const PATH_LATENCY_METRIC: &str = "mqtt.path.latency";
/// The name of the counter of a path's messages sent.
pub const PATH_SENT_METRIC: &str = "mqtt.path.sent";
/// The name of the counter of a path's messages by outcome.
pub const PATH_MESSAGES_METRIC: &str = "mqtt.path.messages";
/// The name of the probes' round-trip histogram (unit `s`).
pub const ROUNDTRIP_RTT_METRIC: &str = "mqtt.client.roundtrip.rtt";
/// The name of the probe messages sent counter.
pub const ROUNDTRIP_SENT_METRIC: &str = "mqtt.client.roundtrip.sent";
/// The name of the probe messages counter, by outcome.
pub const ROUNDTRIP_MESSAGES_METRIC: &str = "mqtt.client.roundtrip.messages";
/// The name of the gauge of the last good round trip (Unix time, unit `s`).
pub const ROUNDTRIP_LAST_SUCCESS_METRIC: &str = "mqtt.client.roundtrip.last_success";

/// The observable instruments, kept alive by the handle: dropping them would
/// end their callbacks.
pub(super) struct Instruments {
    _up: ObservableGauge<i64>,
    _status_changes: ObservableCounter<u64>,
    _path_sent: ObservableCounter<u64>,
    _path_messages: ObservableCounter<u64>,
    _roundtrip_sent: ObservableCounter<u64>,
    _roundtrip_messages: ObservableCounter<u64>,
    _roundtrip_last_success: ObservableGauge<f64>,
}

/// The SDK's OTLP exporter for the resolved settings.
pub(super) fn otlp_exporter(resolved: &Resolved) -> Result<MetricExporter, ExporterBuildError> {
    match resolved.protocol {
        OtlpProtocol::Grpc => {
            let mut headers = axum::http::HeaderMap::new();
            for (name, value) in &resolved.headers {
                // Checked by `settings::resolve`; a pair that still does not
                // parse is left out rather than panicking.
                if let (Ok(name), Ok(value)) = (
                    axum::http::HeaderName::from_bytes(name.as_bytes()),
                    axum::http::HeaderValue::from_str(value),
                ) {
                    headers.insert(name, value);
                }
            }
            MetricExporter::builder()
                .with_tonic()
                .with_endpoint(settings::grpc_target(&resolved.endpoint))
                .with_timeout(resolved.timeout)
                .with_metadata(MetadataMap::from_headers(headers))
                .build()
        }
        OtlpProtocol::HttpProtobuf => {
            // The SDK percent-decodes header values given in code; escape `%`
            // so the value sent is the value given.
            let headers: HashMap<String, String> = resolved
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.replace('%', "%25")))
                .collect();
            MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(resolved.endpoint.as_str())
                .with_timeout(resolved.timeout)
                .with_headers(headers)
                .build()
        }
    }
}

/// Raises the SDK's default cardinality limit (2,000) to the client count
/// (paths: as many as clients; more paths than clients share the SDK's
/// overflow series).
fn cardinality_view(
    max_clients: usize,
) -> impl Fn(&Instrument) -> Option<Stream> + Send + Sync + 'static {
    move |instrument| {
        let limit = match instrument.name() {
            STATUS_CHANGES_METRIC => max_clients * COUNTED_STATUSES.len(),
            UP_METRIC | PING_RTT_METRIC | PATH_LATENCY_METRIC | PATH_SENT_METRIC => max_clients,
            PATH_MESSAGES_METRIC => max_clients * crate::events::RoundTripOutcome::LABELS.len(),
            _ => return None,
        };
        Stream::builder().with_cardinality_limit(limit).build().ok()
    }
}

/// The meter provider: a periodic reader pushing through `exporter` every
/// interval, the resource, and series room for `max_clients`.
pub(super) fn meter_provider(
    exporter: CountingExporter,
    resolved: &Resolved,
    max_clients: usize,
) -> SdkMeterProvider {
    let reader = PeriodicReader::builder(exporter)
        .with_interval(resolved.interval)
        .build();
    let resource = Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(
            resolved
                .resource
                .iter()
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
        )
        .build();
    SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(reader)
        .with_view(cardinality_view(max_clients))
        .build()
}

/// The recorder of `subscription` and the instruments it feeds: the
/// histogram it records ping round trips into, and the two observable
/// instruments whose callbacks read it at each collection.
pub(super) fn instruments(
    provider: &SdkMeterProvider,
    events: Events,
    subscription: Subscription,
    bounds: Vec<f64>,
) -> (Arc<Recorder>, Instruments) {
    let meter = provider.meter_with_scope(
        InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    );
    let rtt = meter
        .f64_histogram(PING_RTT_METRIC)
        .with_unit("s")
        .with_description("Keep-alive round-trip time: PINGREQ written to PINGRESP read.")
        .with_boundaries(bounds.clone())
        .build();
    let roundtrip_rtt = meter
        .f64_histogram(ROUNDTRIP_RTT_METRIC)
        .with_unit("s")
        .with_description(
            "Round-trip time of the probe's messages received: PUBLISH written to PUBLISH read.",
        )
        .with_boundaries(bounds.clone())
        .build();
    let path_latency = meter
        .f64_histogram(PATH_LATENCY_METRIC)
        .with_unit("s")
        .with_description(
            "Broker-to-broker path latency: PUBLISH written on the from client's connection \
             to PUBLISH read on the to client's.",
        )
        .with_boundaries(bounds)
        .build();
    let recorder = Arc::new(Recorder::new(
        events,
        subscription,
        rtt,
        roundtrip_rtt,
        path_latency,
    ));
    let roundtrip_sent = observed_by(
        meter.u64_observable_counter(ROUNDTRIP_SENT_METRIC),
        "Probe messages written to the broker.",
        &recorder,
        Recorder::observe_round_trips_sent,
    )
    .with_unit("{message}")
    .build();
    let roundtrip_messages = observed_by(
        meter.u64_observable_counter(ROUNDTRIP_MESSAGES_METRIC),
        "Probe messages by outcome: received, out_of_order, lost, late, duplicate.",
        &recorder,
        Recorder::observe_round_trip_messages,
    )
    .with_unit("{message}")
    .build();
    let roundtrip_last_success = observed_by(
        meter.f64_observable_gauge(ROUNDTRIP_LAST_SUCCESS_METRIC),
        "Unix time at which a probe message last came back in time and in order.",
        &recorder,
        Recorder::observe_round_trip_last_success,
    )
    .with_unit("s")
    .build();
    let path_sent = observed_by(
        meter.u64_observable_counter(PATH_SENT_METRIC),
        "Messages of the broker-to-broker path written by its from client.",
        &recorder,
        Recorder::observe_path_sent,
    )
    .with_unit("{message}")
    .build();
    let path_messages = observed_by(
        meter.u64_observable_counter(PATH_MESSAGES_METRIC),
        "Messages of the broker-to-broker path by outcome: received, out_of_order, lost, \
         late, duplicate.",
        &recorder,
        Recorder::observe_path_messages,
    )
    .with_unit("{message}")
    .build();
    let status_changes = observed_by(
        meter.u64_observable_counter(STATUS_CHANGES_METRIC),
        "Connection status changes, by the status changed to.",
        &recorder,
        Recorder::observe_changes,
    )
    .build();
    let up = observed_by(
        meter.i64_observable_gauge(UP_METRIC),
        "Whether the client is connected to its broker (1) or not (0).",
        &recorder,
        Recorder::observe_up,
    )
    .build();
    let instruments = Instruments {
        _up: up,
        _status_changes: status_changes,
        _path_sent: path_sent,
        _path_messages: path_messages,
        _roundtrip_sent: roundtrip_sent,
        _roundtrip_messages: roundtrip_messages,
        _roundtrip_last_success: roundtrip_last_success,
    };
    (recorder, instruments)
}

/// An observable instrument described by `description`, whose callback is
/// `observe` on the recorder.
fn observed_by<'a, I, M: 'static>(
    builder: AsyncInstrumentBuilder<'a, I, M>,
    description: &'static str,
    recorder: &Arc<Recorder>,
    observe: fn(&Recorder, &dyn AsyncInstrument<M>),
) -> AsyncInstrumentBuilder<'a, I, M> {
    let recorder = Arc::clone(recorder);
    builder
        .with_description(description)
        .with_callback(move |observer| observe(&recorder, observer))
}
