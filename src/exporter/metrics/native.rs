//! The sparse (native) bucket counts of one round-trip histogram, kept beside
//! the classic buckets so a protobuf scrape can expose a Prometheus native
//! histogram. Sans-IO and allocation-light: a dense run of counts from the
//! lowest to the highest bucket index seen, and a zero bucket. It owns the
//! bucket arithmetic of the native schemas and the rule for which schema is
//! exposed, and nothing else; it must never know about labels, families or
//! encodings.
//!
//! # Resolution
//!
//! Observations are counted at schema 3 ([`OBSERVED_SCHEMA`]): each power of
//! two cut into 2³ = 8 buckets, each 2^(1/8) ≈ 1.09 times wider at its top than
//! at its bottom. The page carries them at the exposed schema, [`MIN_SCHEMA`]
//! to 3, by merging neighbours (2^(3 − schema) observed buckets per exposed
//! one), as Prometheus itself reduces a histogram's resolution: a bucket of
//! schema s spans a factor of 2^(2^−s) (schema 0: 2; 1: 1.41; 2: 1.19).
//!
//! Which schema is exposed is what a Prometheus pays for: every bucket is
//! stored with every sample, and at schema 3 a loopback round trip spread over
//! a few powers of two fills 20–40 of them (BENCHMARKS.md, Cost to
//! Prometheus). Unless configured, the exposed schema is the coarsest one whose
//! buckets are no wider than the narrowest step of the classic layout
//! ([`schema_for`]): the native histogram then resolves everything the classic
//! one does, and more below its first bound and above its last. For the default
//! classic layout (steps of 2 and 2.5) that is schema 0.
//!
//! Counting at schema 3 holds 10–40 buckets for a monitor's round trips (they
//! sit within a few powers of two of each other); the worst case (1 µs to the
//! longest keep-alive, 65,535 s) is 36 powers of two, 288 buckets, 2.3 KiB.
//!
//! Values at or below [`ZERO_THRESHOLD`] (2⁻¹²⁸ s, client_golang's default)
//! count in the zero bucket: a round trip of exactly zero is possible with a
//! coarse clock.

/// The schema observations are counted at: 2^-3 is the log2 width of a bucket.
pub(super) const OBSERVED_SCHEMA: i32 = 3;

/// The finest schema the exporter exposes: the one it counts at.
pub const MAX_SCHEMA: i32 = OBSERVED_SCHEMA;

/// The coarsest schema the exporter exposes, and Prometheus accepts: −4, a
/// bucket spanning a factor of 2^16.
pub const MIN_SCHEMA: i32 = -4;

/// Why `schema` cannot be exposed, if it cannot.
pub(crate) fn schema_problem(schema: i32) -> Option<&'static str> {
    if schema > MAX_SCHEMA {
        Some("finer than the schema round trips are counted at (3)")
    } else if schema < MIN_SCHEMA {
        Some("coarser than Prometheus accepts (-4)")
    } else {
        None
    }
}

/// The schema exposed unless one is configured: the coarsest whose buckets
/// are no wider than the narrowest step between two consecutive classic
/// `bounds` (valid bounds: positive, increasing), at most [`MAX_SCHEMA`]; 0
/// for a single bound, which has no step.
pub(super) fn schema_for(bounds: &[f64]) -> i32 {
    let narrowest = bounds
        .windows(2)
        .map(|pair| pair[1] / pair[0])
        .fold(f64::INFINITY, f64::min);
    if narrowest.is_infinite() {
        return 0;
    }
    // A bucket of schema s spans a factor of 2^(2^-s); the tolerance keeps
    // a step of exactly 2 (0.25 ms → 0.5 ms) at schema 0 despite rounding.
    (MIN_SCHEMA..=MAX_SCHEMA)
        .find(|&schema| 2f64.powf(2f64.powi(-schema)) <= narrowest * (1.0 + 1e-9))
        .unwrap_or(MAX_SCHEMA)
}

/// Observations at or below this many seconds count in the zero bucket.
pub(super) const ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39; // 2^-128

/// Observed buckets per power of two.
const BUCKETS_PER_OCTAVE: i32 = 1 << OBSERVED_SCHEMA;

/// The sparse buckets of one histogram: `counts[i]` is the count of bucket
/// index `first + i`, whose upper bound is 2^((first + i) / 8) seconds.
///
/// Boxed, so a histogram that never saw a round trip (most probes and paths,
/// and every histogram in a build without the feature) costs one null
/// pointer in its client's row, and the rows the text render walks stay
/// as small as they were before native buckets (the render slowed by a
/// quarter with them inline).
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct NativeBuckets(Option<Box<Sparse>>);

#[derive(Clone, Debug, Default, PartialEq)]
struct Sparse {
    first: i32,
    counts: Vec<u64>,
    zero_count: u64,
}

#[cfg_attr(not(feature = "native-histograms"), allow(dead_code))]
impl NativeBuckets {
    /// Counts one observation of `seconds` (finite, non-negative). Without
    /// the `native-histograms` feature nothing reads the buckets, so nothing
    /// is counted (or allocated).
    pub fn observe(&mut self, seconds: f64) {
        if !cfg!(feature = "native-histograms") {
            return;
        }
        self.0.get_or_insert_with(Box::default).observe(seconds);
    }

    /// Observations in the zero bucket.
    pub fn zero_count(&self) -> u64 {
        self.0.as_ref().map_or(0, |sparse| sparse.zero_count)
    }

    /// The non-empty buckets at `schema` ([`MIN_SCHEMA`] to [`MAX_SCHEMA`])
    /// as Prometheus's spans and deltas: each span is (offset from the end of
    /// the previous span, or the first index; length), and each delta is a
    /// bucket's count minus the previous bucket's (the first against 0). Gaps
    /// of up to two empty buckets stay inside a span (two zero deltas are
    /// cheaper than a new span), as client_golang does.
    pub fn spans_and_deltas(&self, schema: i32) -> (Vec<(i32, u32)>, Vec<i64>) {
        debug_assert!(schema_problem(schema).is_none(), "schema {schema}");
        self.0
            .as_ref()
            .map_or_else(Default::default, |sparse| sparse.spans_and_deltas(schema))
    }
}

#[cfg_attr(not(feature = "native-histograms"), allow(dead_code))]
impl Sparse {
    fn observe(&mut self, seconds: f64) {
        if seconds <= ZERO_THRESHOLD || !seconds.is_finite() {
            self.zero_count += 1;
            return;
        }
        let index = bucket_index(seconds);
        if self.counts.is_empty() {
            self.first = index;
            self.counts.push(0);
        } else if index < self.first {
            let grow = (self.first - index) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.first = index;
        } else if index - self.first >= self.counts.len() as i32 {
            self.counts.resize((index - self.first) as usize + 1, 0);
        }
        self.counts[(index - self.first) as usize] += 1;
    }

    fn spans_and_deltas(&self, schema: i32) -> (Vec<(i32, u32)>, Vec<i64>) {
        let shift = OBSERVED_SCHEMA - schema;
        if shift <= 0 || self.counts.is_empty() {
            return encode(self.first, &self.counts);
        }
        // Observed bucket i (upper bound 2^(i/8)) lies in exposed bucket
        // ((i − 1) >> shift) + 1, whose upper bound 2^(that / 2^schema) is the
        // first exposed bound at or above 2^(i/8): Prometheus's own reduction.
        let reduce = |index: i32| ((index - 1) >> shift) + 1;
        let first = reduce(self.first);
        let last = reduce(self.first + self.counts.len() as i32 - 1);
        let mut counts = vec![0; (last - first + 1) as usize];
        for (i, &count) in self.counts.iter().enumerate() {
            counts[(reduce(self.first + i as i32) - first) as usize] += count;
        }
        encode(first, &counts)
    }
}

/// `counts` (`counts[i]` the count of bucket `first + i`) as spans and deltas,
/// as [`NativeBuckets::spans_and_deltas`] describes them.
#[cfg_attr(not(feature = "native-histograms"), allow(dead_code))]
fn encode(first: i32, counts: &[u64]) -> (Vec<(i32, u32)>, Vec<i64>) {
    let mut spans: Vec<(i32, u32)> = Vec::new();
    let mut deltas = Vec::new();
    let mut previous_count = 0i64;
    // The index just past the last bucket written, once one is.
    let mut next_index: Option<i32> = None;
    for (i, &count) in counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let index = first + i as i32;
        match next_index {
            Some(next) if index - next <= 2 => {
                // Close a small gap with explicit empty buckets.
                for _ in next..index {
                    deltas.push(-previous_count);
                    previous_count = 0;
                }
                spans.last_mut().expect("a span is open").1 += (index - next) as u32 + 1;
            }
            Some(next) => spans.push((index - next, 1)),
            None => spans.push((index, 1)),
        }
        deltas.push(count as i64 - previous_count);
        previous_count = count as i64;
        next_index = Some(index + 1);
    }
    (spans, deltas)
}

/// The index of the bucket `seconds` (> 0, finite) falls in: the `i` with
/// 2^((i-1)/8) < seconds <= 2^(i/8). Exact at powers of two and computed from
/// the float's exponent, as client_golang does, so it agrees with Prometheus
/// on which bucket a boundary value is in.
fn bucket_index(seconds: f64) -> i32 {
    let (fraction, exponent) = frexp(seconds);
    // `fraction` is in [0.5, 1): find the first of the octave's bounds
    // 2^(j/8 - 1), j = 0..8, that is >= it.
    let within = OCTAVE_BOUNDS.partition_point(|&bound| bound < fraction) as i32;
    within + (exponent - 1) * BUCKETS_PER_OCTAVE
}

/// 2^(j/8 - 1) for j in 0..8: the bucket bounds within [0.5, 1).
const OCTAVE_BOUNDS: [f64; 8] = [
    0.5,
    0.545_253_866_332_628_8,
    0.594_603_557_501_360_5,
    0.648_419_777_325_504_8,
    0.707_106_781_186_547_5,
    0.771_105_412_703_970_4,
    0.840_896_415_253_714_5,
    0.917_004_043_204_671_2,
];

/// `value` (positive, normal) as `fraction * 2^exponent` with `fraction` in
/// [0.5, 1), like C's `frexp`; std has no such function. Subnormals never
/// reach here: they are below the zero threshold.
fn frexp(value: f64) -> (f64, i32) {
    let bits = value.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32 - 1022;
    let fraction = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (fraction, exponent)
}

#[cfg(all(test, feature = "native-histograms"))]
mod tests {
    use super::*;

    /// The upper bound of bucket `index`.
    fn upper(index: i32) -> f64 {
        2f64.powf(f64::from(index) / f64::from(BUCKETS_PER_OCTAVE))
    }

    /// A value well inside bucket `index`.
    fn inside(index: i32) -> f64 {
        upper(index) * 0.99
    }

    #[test]
    fn the_octave_bounds_are_the_powers_of_the_eighth_root_of_two() {
        for (j, bound) in OCTAVE_BOUNDS.iter().enumerate() {
            let exact = 2f64.powf(j as f64 / 8.0 - 1.0);
            assert!((bound - exact).abs() < 1e-15, "{j}: {bound} vs {exact}");
        }
    }

    #[test]
    fn a_value_lands_in_the_bucket_whose_upper_bound_it_does_not_exceed() {
        for value in [
            1e-7, 0.000_123, 0.001, 0.003_7, 0.25, 1.0, 1.05, 3.0, 65_535.0,
        ] {
            let index = bucket_index(value);
            assert!(
                upper(index - 1) < value,
                "{value} above bucket {}",
                index - 1
            );
            assert!(
                value <= upper(index) * (1.0 + 1e-12),
                "{value} in bucket {index}"
            );
        }
        // Powers of two are upper bounds: they close their bucket.
        assert_eq!(bucket_index(1.0), 0);
        assert_eq!(bucket_index(2.0), 8);
        assert_eq!(bucket_index(0.5), -8);
        assert_eq!(bucket_index(2.0f64.powi(-10)), -80);
        assert_eq!(bucket_index(1.000_001), 1);
    }

    #[test]
    fn zero_and_tiny_values_count_in_the_zero_bucket() {
        let mut buckets = NativeBuckets::default();
        buckets.observe(0.0);
        buckets.observe(ZERO_THRESHOLD);
        assert_eq!(buckets.zero_count(), 2);
        assert_eq!(buckets.spans_and_deltas(3), (vec![], vec![]));
    }

    #[test]
    fn spans_and_deltas_encode_the_counts_and_bridge_gaps_of_up_to_two() {
        let mut buckets = NativeBuckets::default();
        // Bucket 0 twice, bucket 1 once, bucket 4 three times (gap of 2:
        // bridged), bucket 10 once (gap of 5: a new span), observed out of order.
        for value in [
            inside(10),
            inside(4),
            1.0,
            inside(1),
            inside(4),
            inside(0),
            inside(4),
        ] {
            buckets.observe(value);
        }
        let (spans, deltas) = buckets.spans_and_deltas(3);
        assert_eq!(spans, vec![(0, 5), (5, 1)]);
        // Counts 2, 1, 0, 0, 3 | 1.
        assert_eq!(deltas, vec![2, -1, -1, 0, 3, -2]);
    }

    #[test]
    fn a_lower_value_later_grows_the_run_downwards() {
        let mut buckets = NativeBuckets::default();
        buckets.observe(1.0);
        buckets.observe(inside(-20));
        let (spans, deltas) = buckets.spans_and_deltas(3);
        assert_eq!(spans, vec![(-20, 1), (19, 1)]);
        assert_eq!(deltas, vec![1, 0]);
    }

    #[test]
    fn a_coarser_schema_merges_neighbours_as_prometheus_reduces_resolution() {
        let mut buckets = NativeBuckets::default();
        // Observed buckets -8 (0.5], -7 (just above 0.5), 0 (1.0], 1, 8 (2.0].
        for value in [0.5, inside(-7), 1.0, inside(0), inside(1), 2.0] {
            buckets.observe(value);
        }
        // Schema 0: buckets (0.25, 0.5] = -1 holds 0.5; (0.5, 1] = 0 holds
        // three; (1, 2] = 1 holds two, 2.0 closing it.
        assert_eq!(buckets.spans_and_deltas(0), (vec![(-1, 3)], vec![1, 2, -1]));
        // Schema 2 (bounds 2^(k/4)): -8 → -4, -7 → -3, 0 → 0, 1 → 1, 8 → 4;
        // counts 1, 1, 0, 0, 2, 1, 0, 0, 1 from -4, the gaps of two bridged.
        let (spans, deltas) = buckets.spans_and_deltas(2);
        assert_eq!(spans, vec![(-4, 9)]);
        assert_eq!(deltas, vec![1, 0, -1, 0, 2, -1, -1, 0, 1]);
        // Schema -1 (bounds 4^k): the four from 0.5 to 1 in bucket 0, the
        // two above 1 in bucket 1.
        assert_eq!(buckets.spans_and_deltas(-1), (vec![(0, 2)], vec![4, -2]));
        // Every schema keeps every observation.
        for schema in MIN_SCHEMA..=MAX_SCHEMA {
            let (_, deltas) = buckets.spans_and_deltas(schema);
            let mut count = 0;
            let total: i64 = deltas
                .iter()
                .map(|d| {
                    count += d;
                    count
                })
                .sum();
            assert_eq!(total, 6, "schema {schema}");
        }
    }

    #[test]
    fn the_default_schema_is_the_coarsest_no_wider_than_the_classic_steps() {
        // The default layout steps by 2 and 2.5: schema 0 (factor 2).
        assert_eq!(schema_for(&crate::exporter::DEFAULT_RTT_BUCKETS), 0);
        // Steps of 1.5: schema 1 (1.41); of 1.1: schema 3 (1.09).
        assert_eq!(schema_for(&[0.001, 0.0015, 0.00225]), 1);
        assert_eq!(schema_for(&[0.1, 0.11, 0.121]), 3);
        // Finer than schema 3 can resolve: the finest there is.
        assert_eq!(schema_for(&[0.1, 0.101]), 3);
        // Steps of 10: schema -1 (4); of 2^16 or more: -4.
        assert_eq!(schema_for(&[0.001, 0.01, 0.1]), -1);
        assert_eq!(schema_for(&[1e-6, 1.0]), -4);
        assert_eq!(schema_for(&[0.5]), 0);
    }

    #[test]
    fn schemas_outside_minus_four_to_three_are_refused() {
        assert!(schema_problem(4).is_some());
        assert!(schema_problem(-5).is_some());
        assert!((MIN_SCHEMA..=MAX_SCHEMA).all(|schema| schema_problem(schema).is_none()));
    }
}
