//! The `promhttp_metric_handler_*` families of `/metrics`, registered on the
//! exporter's registry the first time the handle is served.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

/// The `promhttp_metric_handler_*` families that node_exporter and every Go
/// exporter serve, so the dashboards and alerts written for those read this
/// exporter's `/metrics` answers too.
#[derive(Clone, Debug)]
pub(crate) struct ScrapeStats {
    /// `/metrics` answers by HTTP status code.
    pub(crate) requests: IntCounterVec,
    /// `/metrics` requests being answered now.
    pub(crate) in_flight: IntGauge,
}

impl ScrapeStats {
    pub(super) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "promhttp_metric_handler_requests_total",
                "Total number of scrapes by HTTP status code.",
            ),
            &["code"],
        )?;
        // As promhttp does: the codes a scrape usually ends with exist from the start.
        for code in ["200", "500", "503"] {
            requests.with_label_values(&[code]);
        }
        let in_flight = IntGauge::new(
            "promhttp_metric_handler_requests_in_flight",
            "Current number of scrapes being served.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        if let Err(error) = registry.register(Box::new(in_flight.clone())) {
            let _ = registry.unregister(Box::new(requests));
            return Err(error);
        }
        Ok(ScrapeStats {
            requests,
            in_flight,
        })
    }
}
