//! The handle on a built Prometheus exporter: the rendered page, the clients
//! it knows, and the `promhttp_metric_handler_*` families of `/metrics`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus::proto::MetricFamily;
use prometheus::{Registry, TextEncoder};

use super::collector::{ExporterState, MuteOwnCollector};
use super::family::Family;
use super::scrape_stats::ScrapeStats;
use crate::events::ClientState;
use crate::sync::lock;

/// A cheap, cloneable handle on a built exporter: renders its registry and
/// tells what it knows of each client.
#[derive(Clone)]
pub struct MetricsHandle {
    state: Arc<ExporterState>,
    registry: Registry,
    /// Whether `render` may write our families itself. False when the registry
    /// rewrites names or labels (a prefix or common labels), which only its
    /// own `gather` knows how to do.
    fast_text: bool,
}

/// One client as the exporter sees it: the hub's present state and the last
/// keep-alive round trip.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientSummary {
    /// The hub's present state of the client.
    pub state: ClientState,
    /// The last ping round-trip time seen since the exporter was built.
    pub last_ping_rtt: Option<Duration>,
}

impl MetricsHandle {
    pub(super) fn new(state: Arc<ExporterState>, registry: Registry, fast_text: bool) -> Self {
        Self {
            state,
            registry,
            fast_text,
        }
    }

    #[cfg(test)]
    pub(super) fn state(&self) -> &ExporterState {
        &self.state
    }

    /// Everything on the registry in the Prometheus text format, version 0.0.4
    /// ([`prometheus::TEXT_FORMAT`]), families sorted by name. Reflects every
    /// event dispatched before the call.
    ///
    /// CPU-bound for large fleets (about 10 ms for 10,000 clients in a release
    /// build): from async code, call it in `spawn_blocking`.
    pub fn render(&self) -> String {
        self.state.catch_up();
        let encoder = TextEncoder::new();
        let mut out = String::with_capacity(self.state.size_hint());
        if !self.fast_text {
            for family in self.registry.gather() {
                encode_other(&encoder, &family, &mut out);
            }
            self.state.remember_size(out.len());
            return out;
        }

        let snapshot = self.state.snapshot(false);
        let others = {
            let _own_collector_muted = MuteOwnCollector::new(&self.state);
            self.registry.gather()
        };
        let layout = &self.state.layout;
        let labels = snapshot.client_labels();
        // Both lists are sorted by name: merge them so the page is too.
        let mut own = Family::ALL.into_iter().peekable();
        for family in &others {
            while let Some(next) = own.next_if(|own| own.name() < family.name()) {
                snapshot.write_text(next, layout, &labels, &mut out);
            }
            encode_other(&encoder, family, &mut out);
        }
        for family in own {
            snapshot.write_text(family, layout, &labels, &mut out);
        }
        self.state.remember_size(out.len());
        out
    }

    /// Everything on the registry in the Prometheus protobuf exposition
    /// (length-delimited `io.prometheus.client.MetricFamily` messages,
    /// [`protobuf::CONTENT_TYPE`](super::protobuf)), families sorted by name:
    /// what a Prometheus with native histograms enabled asks for. The
    /// round-trip histograms (`mqtt_client_ping_rtt_seconds`,
    /// `mqtt_client_roundtrip_seconds`, `mqtt_path_latency_seconds`) carry
    /// native buckets (at [`MetricsBuilder::with_native_schema`](super::MetricsBuilder::with_native_schema)'s
    /// schema) instead of their classic ones; everything else
    /// is what [`render`](Self::render) writes, in another encoding. Reflects
    /// every event dispatched before the call.
    ///
    /// On a registry with a name prefix or common labels only the registry's
    /// own `gather` knows how to rewrite the families, so they come from it,
    /// without native buckets.
    #[cfg(feature = "native-histograms")]
    pub fn render_protobuf(&self) -> Vec<u8> {
        use super::protobuf::{from_gathered, push_delimited};
        self.state.catch_up();
        let mut out = Vec::with_capacity(self.state.protobuf_size_hint());
        if !self.fast_text {
            for family in self.registry.gather() {
                push_delimited(&from_gathered(&family), &mut out);
            }
            self.state.remember_protobuf_size(out.len());
            return out;
        }
        let snapshot = self.state.snapshot(true);
        let others = {
            let _own_collector_muted = MuteOwnCollector::new(&self.state);
            self.registry.gather()
        };
        let layout = &self.state.layout;
        let write_own = |family: Family, out: &mut Vec<u8>| {
            if let Some(family) = snapshot.to_protobuf(family, layout) {
                push_delimited(&family, out);
            }
        };
        let mut own = Family::ALL.into_iter().peekable();
        for family in &others {
            while let Some(next) = own.next_if(|own| own.name() < family.name()) {
                write_own(next, &mut out);
            }
            push_delimited(&from_gathered(family), &mut out);
        }
        for family in own {
            write_own(family, &mut out);
        }
        self.state.remember_protobuf_size(out.len());
        out
    }

    /// The registry the exporter's collector is on.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every client the hub knows, sorted by client id, with its last ping
    /// round trip. Reflects every event dispatched before the call.
    pub fn clients(&self) -> Vec<ClientSummary> {
        self.state.catch_up();
        let clients = self.state.events.clients();
        let series = lock(&self.state.series);
        clients
            .into_iter()
            .map(|state| ClientSummary {
                last_ping_rtt: series
                    .get(state.client_id.as_str())
                    .and_then(|s| s.last_rtt),
                state,
            })
            .collect()
    }
}

impl MetricsHandle {
    /// The hub this exporter subscribes to (for the daemon's `/events`).
    pub(crate) fn events(&self) -> &crate::events::Events {
        &self.state.events
    }

    /// The handler metrics of `/metrics`, registered on this handle's registry
    /// the first time they are asked for (so an embedder who serves the
    /// handle some other way never sees them). `None`, with a warning, when
    /// the registry already has metrics of those names.
    pub(crate) fn scrape_stats(&self) -> Option<&ScrapeStats> {
        self.state
            .scrape_stats
            .get_or_init(|| match ScrapeStats::register(&self.registry) {
                Ok(stats) => Some(stats),
                Err(error) => {
                    tracing::warn!(%error, "not counting /metrics requests: the registry refused promhttp_metric_handler_*");
                    None
                }
            })
            .as_ref()
    }
}

impl fmt::Debug for MetricsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsHandle")
            .field("watched_clients", &lock(&self.state.series).len())
            .field("fast_text", &self.fast_text)
            .finish_non_exhaustive()
    }
}

fn encode_other(encoder: &TextEncoder, family: &MetricFamily, out: &mut String) {
    // One family at a time, so a malformed family from someone else's collector
    // costs only itself. The encoder checks before it writes anything.
    if let Err(error) = encoder.encode_utf8(std::slice::from_ref(family), out) {
        tracing::warn!(family = family.name(), %error, "skipping a metric family that cannot be encoded");
    }
}
