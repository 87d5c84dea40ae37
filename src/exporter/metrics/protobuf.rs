//! The Prometheus protobuf exposition (`io.prometheus.client.MetricFamily`,
//! length-delimited): what a Prometheus with native histograms enabled asks
//! for, and the only format in which Prometheus 2.x reads native histograms.
//! The exporter's round-trip histograms go out as native (sparse) histograms
//! *and* with their classic buckets, as client_golang does when both are
//! configured: a Prometheus that ingests native histograms keeps the sparse
//! one (one series instead of one per bucket), any other protobuf reader still
//! finds the classic buckets. Every other family, ours and the registry's,
//! goes out as it would in text.
//!
//! It owns the message declarations and the mapping onto them; it must never
//! decide what is exposed (the snapshot and the registry do) nor be used for
//! the text format, which stays byte for byte what it was.
//!
//! # Why declared here
//!
//! The `prometheus` crate's model (0.14) predates native histograms: its
//! `Histogram` has no schema, zero bucket, spans or deltas, and its protobuf
//! support is an optional rust-protobuf dependency generated from that old
//! `.proto`. No maintained crate publishes the `io.prometheus.client` messages
//! with the native fields, so the few messages below are declared by hand with
//! `prost`'s derive (the codec itself is prost's; prost is what tonic and
//! OpenTelemetry use too). Field numbers and types are those of
//! prometheus/client_model `io/prometheus/client/metrics.proto`; exemplars,
//! created timestamps, units and float counts are left out because nothing
//! here produces them, and a decoder skips what it does not know.

use prometheus::proto as plain;
use prost::Message as _;

use super::native::{NativeBuckets, ZERO_THRESHOLD};

/// The `Content-Type` of this exposition.
pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// The `io.prometheus.client` messages this exporter writes.
#[allow(
    missing_docs,
    reason = "each field is the .proto field of the same name"
)]
pub mod model {
    /// `io.prometheus.client.MetricType`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        Counter = 0,
        Gauge = 1,
        Summary = 2,
        Untyped = 3,
        Histogram = 4,
        GaugeHistogram = 5,
    }

    /// `io.prometheus.client.LabelPair`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `io.prometheus.client.Gauge`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Gauge {
        #[prost(double, tag = "1")]
        pub value: f64,
    }

    /// `io.prometheus.client.Counter`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Counter {
        #[prost(double, tag = "1")]
        pub value: f64,
    }

    /// `io.prometheus.client.Quantile`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Quantile {
        #[prost(double, tag = "1")]
        pub quantile: f64,
        #[prost(double, tag = "2")]
        pub value: f64,
    }

    /// `io.prometheus.client.Summary`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        #[prost(uint64, tag = "1")]
        pub sample_count: u64,
        #[prost(double, tag = "2")]
        pub sample_sum: f64,
        #[prost(message, repeated, tag = "3")]
        pub quantile: Vec<Quantile>,
    }

    /// `io.prometheus.client.Untyped`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Untyped {
        #[prost(double, tag = "1")]
        pub value: f64,
    }

    /// `io.prometheus.client.Histogram`, classic and native fields.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(uint64, tag = "1")]
        pub sample_count: u64,
        #[prost(double, tag = "2")]
        pub sample_sum: f64,
        #[prost(message, repeated, tag = "3")]
        pub bucket: Vec<Bucket>,
        #[prost(sint32, tag = "5")]
        pub schema: i32,
        #[prost(double, tag = "6")]
        pub zero_threshold: f64,
        #[prost(uint64, tag = "7")]
        pub zero_count: u64,
        #[prost(message, repeated, tag = "9")]
        pub negative_span: Vec<BucketSpan>,
        #[prost(sint64, repeated, tag = "10")]
        pub negative_delta: Vec<i64>,
        #[prost(message, repeated, tag = "12")]
        pub positive_span: Vec<BucketSpan>,
        #[prost(sint64, repeated, tag = "13")]
        pub positive_delta: Vec<i64>,
    }

    /// `io.prometheus.client.Bucket`: a classic, cumulative bucket.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Bucket {
        #[prost(uint64, tag = "1")]
        pub cumulative_count: u64,
        #[prost(double, tag = "2")]
        pub upper_bound: f64,
    }

    /// `io.prometheus.client.BucketSpan`: `length` consecutive native
    /// buckets, starting `offset` indices after the previous span's end (the
    /// first span: at index `offset`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BucketSpan {
        #[prost(sint32, tag = "1")]
        pub offset: i32,
        #[prost(uint32, tag = "2")]
        pub length: u32,
    }

    /// `io.prometheus.client.Metric`: one series (one per histogram).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(message, repeated, tag = "1")]
        pub label: Vec<LabelPair>,
        #[prost(message, optional, tag = "2")]
        pub gauge: Option<Gauge>,
        #[prost(message, optional, tag = "3")]
        pub counter: Option<Counter>,
        #[prost(message, optional, tag = "4")]
        pub summary: Option<Summary>,
        #[prost(message, optional, tag = "5")]
        pub untyped: Option<Untyped>,
        #[prost(int64, tag = "6")]
        pub timestamp_ms: i64,
        #[prost(message, optional, tag = "7")]
        pub histogram: Option<Histogram>,
    }

    /// `io.prometheus.client.MetricFamily`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricFamily {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub help: String,
        #[prost(enumeration = "MetricType", tag = "3")]
        pub r#type: i32,
        #[prost(message, repeated, tag = "4")]
        pub metric: Vec<Metric>,
    }
}

use model::{Bucket, BucketSpan, Histogram, LabelPair, Metric, MetricFamily, MetricType};

/// One round-trip histogram as the snapshot holds it.
pub(super) struct HistogramParts<'a> {
    /// Per classic bucket, not cumulative; the last is above every bound.
    pub buckets: &'a [u64],
    pub sum: f64,
    pub count: u64,
    pub native: &'a NativeBuckets,
}

/// A histogram series: classic buckets up to `bounds` and the native ones
/// at `schema`.
pub(super) fn histogram_metric(
    labels: Vec<LabelPair>,
    parts: &HistogramParts<'_>,
    bounds: &[f64],
    schema: i32,
) -> Metric {
    let mut cumulative = 0;
    let bucket = bounds
        .iter()
        .zip(parts.buckets)
        .map(|(&upper_bound, &count)| {
            cumulative += count;
            Bucket {
                cumulative_count: cumulative,
                upper_bound,
            }
        })
        .collect();
    let (spans, positive_delta) = parts.native.spans_and_deltas(schema);
    Metric {
        label: labels,
        histogram: Some(Histogram {
            sample_count: parts.count,
            sample_sum: parts.sum,
            bucket,
            schema,
            // Never zero, even with no observation: a non-zero threshold (and
            // schema) is how Prometheus tells a native histogram from a classic one.
            zero_threshold: ZERO_THRESHOLD,
            zero_count: parts.native.zero_count(),
            negative_span: Vec::new(),
            negative_delta: Vec::new(),
            positive_span: spans
                .into_iter()
                .map(|(offset, length)| BucketSpan { offset, length })
                .collect(),
            positive_delta,
        }),
        ..Metric::default()
    }
}

/// A label pair of the model.
pub(super) fn label(name: &str, value: &str) -> LabelPair {
    LabelPair {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

/// A family of our own histograms.
pub(super) fn histogram_family(name: &str, help: &str, metric: Vec<Metric>) -> MetricFamily {
    MetricFamily {
        name: name.to_owned(),
        help: help.to_owned(),
        r#type: MetricType::Histogram as i32,
        metric,
    }
}

/// `family` (as the `prometheus` crate gathers it) in this model: the same
/// samples, nothing added.
pub(super) fn from_gathered(family: &plain::MetricFamily) -> MetricFamily {
    let metric_type = family.get_field_type();
    let metric = family
        .get_metric()
        .iter()
        .map(|metric| {
            let mut out = Metric {
                label: metric
                    .get_label()
                    .iter()
                    .map(|pair| label(pair.name(), pair.value()))
                    .collect(),
                timestamp_ms: metric.timestamp_ms(),
                ..Metric::default()
            };
            match metric_type {
                plain::MetricType::COUNTER => {
                    out.counter = Some(model::Counter {
                        value: metric.get_counter().get_value(),
                    });
                }
                plain::MetricType::GAUGE => {
                    out.gauge = Some(model::Gauge {
                        value: metric.get_gauge().get_value(),
                    });
                }
                // Untyped is deprecated in the crate's model, but another
                // collector on the registry may still yield it.
                #[allow(deprecated)]
                plain::MetricType::UNTYPED => {
                    out.untyped = Some(model::Untyped {
                        value: metric.get_untyped().get_value(),
                    });
                }
                plain::MetricType::SUMMARY => {
                    let summary = metric.get_summary();
                    out.summary = Some(model::Summary {
                        sample_count: summary.sample_count(),
                        sample_sum: summary.sample_sum(),
                        quantile: summary
                            .get_quantile()
                            .iter()
                            .map(|q| model::Quantile {
                                quantile: q.quantile(),
                                value: q.value(),
                            })
                            .collect(),
                    });
                }
                plain::MetricType::HISTOGRAM => {
                    let histogram = metric.get_histogram();
                    out.histogram = Some(Histogram {
                        sample_count: histogram.get_sample_count(),
                        sample_sum: histogram.get_sample_sum(),
                        bucket: histogram
                            .get_bucket()
                            .iter()
                            .map(|b| Bucket {
                                cumulative_count: b.cumulative_count(),
                                upper_bound: b.upper_bound(),
                            })
                            .collect(),
                        ..Histogram::default()
                    });
                }
            }
            out
        })
        .collect();
    MetricFamily {
        name: family.name().to_owned(),
        help: family.help().to_owned(),
        r#type: match metric_type {
            plain::MetricType::COUNTER => MetricType::Counter,
            plain::MetricType::GAUGE => MetricType::Gauge,
            plain::MetricType::SUMMARY => MetricType::Summary,
            plain::MetricType::UNTYPED => MetricType::Untyped,
            plain::MetricType::HISTOGRAM => MetricType::Histogram,
        } as i32,
        metric,
    }
}

/// Appends `family` as one length-delimited message.
pub(super) fn push_delimited(family: &MetricFamily, out: &mut Vec<u8>) {
    // Writing into a Vec only fails when it cannot grow, which aborts anyway.
    family
        .encode_length_delimited(out)
        .expect("a Vec grows as needed");
}

/// The families of a protobuf page, in order; for tests and for anyone who
/// wants to read what the exporter serves.
///
/// # Errors
///
/// The decoder's error if `page` is not a sequence of length-delimited
/// `MetricFamily` messages.
pub fn decode_page(mut page: &[u8]) -> Result<Vec<MetricFamily>, prost::DecodeError> {
    let mut families = Vec::new();
    while !page.is_empty() {
        families.push(MetricFamily::decode_length_delimited(&mut page)?);
    }
    Ok(families)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_carries_classic_buckets_and_the_native_layout() {
        let mut native = NativeBuckets::default();
        for seconds in [0.0, 1.0, 1.0, 2.0] {
            native.observe(seconds);
        }
        let parts = HistogramParts {
            buckets: &[3, 1, 0],
            sum: 4.0,
            count: 4,
            native: &native,
        };
        let metric = histogram_metric(vec![label("a", "b")], &parts, &[1.0, 2.0], 3);
        let histogram = metric.histogram.unwrap();
        assert_eq!(
            histogram.bucket,
            vec![
                Bucket {
                    cumulative_count: 3,
                    upper_bound: 1.0
                },
                Bucket {
                    cumulative_count: 4,
                    upper_bound: 2.0
                },
            ]
        );
        assert_eq!(histogram.schema, 3);
        assert_eq!(histogram.zero_count, 1);
        assert!(histogram.zero_threshold > 0.0);
        // Bucket 0 (upper bound 1) twice, bucket 8 (upper bound 2) once.
        assert_eq!(
            histogram.positive_span,
            vec![
                BucketSpan {
                    offset: 0,
                    length: 1
                },
                BucketSpan {
                    offset: 7,
                    length: 1
                }
            ]
        );
        assert_eq!(histogram.positive_delta, vec![2, -1]);

        // At schema 0 the same counts are buckets 0 (upper bound 1) and
        // 1 (upper bound 2), one span.
        let histogram = histogram_metric(Vec::new(), &parts, &[], 0)
            .histogram
            .unwrap();
        assert_eq!(histogram.schema, 0);
        assert_eq!(
            histogram.positive_span,
            vec![BucketSpan {
                offset: 0,
                length: 2
            }]
        );
        assert_eq!(histogram.positive_delta, vec![2, -1]);
        assert!(histogram.bucket.is_empty());
    }

    #[test]
    fn a_page_of_families_decodes_to_what_was_encoded() {
        let families = vec![
            histogram_family("h", "help", vec![Metric::default()]),
            MetricFamily {
                name: "c_total".into(),
                help: "a counter".into(),
                r#type: MetricType::Counter as i32,
                metric: vec![Metric {
                    label: vec![label("x", "ü\"\n")],
                    counter: Some(model::Counter { value: 0.0 }),
                    ..Metric::default()
                }],
            },
        ];
        let mut page = Vec::new();
        for family in &families {
            push_delimited(family, &mut page);
        }
        assert_eq!(decode_page(&page).unwrap(), families);
        assert!(decode_page(&page[..page.len() - 1]).is_err());
    }
}
